"""The router's output in OpenAI's wire format: chat.completion objects, chat.completion.chunk SSE events, and the
typed protobuf twins for gRPC callers. Field names, nulls and numbers exactly as OpenAI sends them."""

from __future__ import annotations

import functools
import hashlib
import json

from google.protobuf import json_format

from llmaas.common.errors import ApiError
from llmaas.router.pipeline import ChatRun
from llmaas.router.v1 import router_pb2

DONE_EVENT = b"data: [DONE]\n\n"


@functools.lru_cache(maxsize=256)
def _fingerprint(model: str, triton_model: str) -> str:
    return "fp_" + hashlib.sha256(f"{model}\0{triton_model}".encode()).hexdigest()[:12]


def system_fingerprint(run: ChatRun) -> str:
    """OpenAI's `system_fingerprint` (a string in its schema, never null): stable for a model and the backend model
    that serves it, so a change of backend shows."""
    return _fingerprint(run.model, run.triton_model)


def _usage(run: ChatRun) -> dict:
    u = run.usage
    usage = {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
             "total_tokens": u.total_tokens}
    if run.reasoning is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": u.reasoning_tokens}
    return usage


def finish_reason(run: ChatRun) -> str:
    """`tool_calls` when the answer was calls (llmaas.router.chat_output), else the backend's reason."""
    return run.output.finish_reason(run.finish_reason) if run.output is not None else run.finish_reason or "stop"


def completion(run: ChatRun, text: str, message: dict | None = None, logprobs: dict | None = None) -> dict:
    """A single choice's completion (its text, or its shaped message and logprobs)."""
    return _completion(run, [_choice(run, 0, text, message, logprobs)])


def _choice(run: ChatRun, index: int, text: str, message: dict | None = None, logprobs: dict | None = None) -> dict:
    return {
        "index": index,
        "message": message or {"role": "assistant", "content": text, "refusal": None},
        "logprobs": logprobs,
        "finish_reason": finish_reason(run),
    }


def _completion(run: ChatRun, choices: list[dict]) -> dict:
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": run.model,
        "choices": choices,
        "usage": _usage(run),
        "system_fingerprint": system_fingerprint(run),
    }


def completion_of(run: ChatRun, per_choice: list[list]) -> dict:
    """A non-streamed answer from each choice's deltas (pipeline.collect): one choice, or a request's several."""
    choices = []
    for index, (choice, deltas) in enumerate(zip(run.choices or (run,), per_choice, strict=True)):
        if choice.output is None:
            choices.append(_choice(choice, index, "".join(d.text for d in deltas)))
        else:
            message, logprobs = choice.output.message(deltas)
            choices.append(_choice(choice, index, "", message, logprobs))
    return _completion(run, choices)


def chunk(run: ChatRun, delta: dict, finish_reason: str | None = None, logprobs: dict | None = None,
          index: int = 0) -> dict:
    event = {
        "id": run.id,
        "object": "chat.completion.chunk",
        "created": run.created,
        "model": run.model,
        "system_fingerprint": system_fingerprint(run),
        "choices": [{"index": index, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}],
    }
    if run.params.include_usage:
        event["usage"] = None  # OpenAI sends null on every chunk but the usage one
    return event


def usage_chunk(run: ChatRun) -> dict:
    return {"id": run.id, "object": "chat.completion.chunk", "created": run.created, "model": run.model,
            "system_fingerprint": system_fingerprint(run), "choices": [], "usage": _usage(run)}


def shaped_chunks(run: ChatRun, parts, index: int = 0) -> bytes:
    """SSE events of ChatOutput's (delta, logprobs) pairs."""
    return b"".join(sse(chunk(run, delta, logprobs=logprobs, index=index)) for delta, logprobs in parts)


def final_chunk(run: ChatRun, index: int = 0) -> dict:
    """The finish chunk (with the logprobs of tokens that showed no text, e.g. a cut stop string)."""
    leftover = run.output.leftover_logprobs() if run.output is not None else None
    return chunk(run, {}, finish_reason(run), leftover, index)


def choice_events(run: ChatRun, index: int, delta) -> bytes:
    """The SSE events of one choice's delta in a request with several (run: that choice's child run), its finish
    chunk when the delta is its last."""
    if run.output is None:
        data = sse(chunk(run, {"content": delta.text}, index=index)) if delta.text else b""
    else:
        data = shaped_chunks(run, run.output.deltas(delta), index)
    if delta.final:
        if run.output is not None:
            data += shaped_chunks(run, run.output.end(), index)
        data += sse(final_chunk(run, index))
    return data


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse_error(err: ApiError) -> bytes:
    # After the first byte the HTTP status is gone; OpenAI's SDKs raise on an in-band error event.
    return b"data: " + json.dumps(err.body(), separators=(",", ":")).encode() + b"\n\n"


def json_body(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _typed_usage(run: ChatRun) -> router_pb2.Usage:
    u = run.usage
    usage = router_pb2.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                             total_tokens=u.total_tokens)
    if run.reasoning is not None:
        usage.completion_tokens_details.reasoning_tokens = u.reasoning_tokens
    return usage


def typed_completion(run: ChatRun, text: str) -> router_pb2.CreateChatCompletionResponse:
    return router_pb2.CreateChatCompletionResponse(
        id=run.id, object="chat.completion", created=run.created, model=run.model,
        system_fingerprint=system_fingerprint(run),
        choices=[router_pb2.ChatCompletionChoice(
            index=0, message=router_pb2.AssistantMessage(role="assistant", content=text),
            finish_reason=run.finish_reason or "stop")],
        usage=_typed_usage(run))


def typed_chunk(run: ChatRun, *, role: str = "", content: str | None = None, finish_reason: str = "",
                with_usage: bool = False, index: int = 0) -> router_pb2.StreamChatCompletionResponse:
    base = dict(id=run.id, object="chat.completion.chunk", created=run.created, model=run.model)
    if with_usage:
        return router_pb2.StreamChatCompletionResponse(**base, usage=_typed_usage(run))
    delta = router_pb2.ChunkDelta(role=role)
    if content is not None:
        delta.content = content
    return router_pb2.StreamChatCompletionResponse(
        **base, choices=[router_pb2.ChatCompletionChunkChoice(index=index, delta=delta, finish_reason=finish_reason)])


def typed_shaped_completion(run: ChatRun, per_choice: list[list]) -> router_pb2.CreateChatCompletionResponse:
    """The typed twin of completion_of (tool calls, logprobs, several choices): the same JSON, read into the typed
    message."""
    return json_format.ParseDict(completion_of(run, per_choice), router_pb2.CreateChatCompletionResponse(),
                                 ignore_unknown_fields=True)


def typed_shaped_chunks(run: ChatRun, parts, index: int = 0) -> list[router_pb2.StreamChatCompletionResponse]:
    return [json_format.ParseDict(chunk(run, delta, logprobs=logprobs, index=index),
                                  router_pb2.StreamChatCompletionResponse(), ignore_unknown_fields=True)
            for delta, logprobs in parts]


def typed_events(event_bytes: bytes) -> list[router_pb2.StreamChatCompletionResponse]:
    """SSE events (choice_events) read into the typed chunks."""
    return [json_format.Parse(line[len(b"data: "):], router_pb2.StreamChatCompletionResponse(),
                              ignore_unknown_fields=True)
            for line in event_bytes.split(b"\n\n") if line.startswith(b"data: {")]


def typed_final_chunk(run: ChatRun) -> router_pb2.StreamChatCompletionResponse:
    return json_format.ParseDict(final_chunk(run), router_pb2.StreamChatCompletionResponse(),
                                 ignore_unknown_fields=True)
