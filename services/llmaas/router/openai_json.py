"""The router's output in OpenAI's wire format: chat.completion objects, chat.completion.chunk SSE events, and the
typed protobuf twins for gRPC callers. Field names, nulls and numbers exactly as OpenAI sends them."""

from __future__ import annotations

import functools
import hashlib
import json

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
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens,
            "total_tokens": u.total_tokens}


def completion(run: ChatRun, text: str) -> dict:
    return {
        "id": run.id,
        "object": "chat.completion",
        "created": run.created,
        "model": run.model,
        "choices": [{
            "index": 0,
            "message": {"role": "assistant", "content": text, "refusal": None},
            "logprobs": None,
            "finish_reason": run.finish_reason or "stop",
        }],
        "usage": _usage(run),
        "system_fingerprint": system_fingerprint(run),
    }


def chunk(run: ChatRun, delta: dict, finish_reason: str | None = None) -> dict:
    event = {
        "id": run.id,
        "object": "chat.completion.chunk",
        "created": run.created,
        "model": run.model,
        "system_fingerprint": system_fingerprint(run),
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}],
    }
    if run.params.include_usage:
        event["usage"] = None  # OpenAI sends null on every chunk but the usage one
    return event


def usage_chunk(run: ChatRun) -> dict:
    return {"id": run.id, "object": "chat.completion.chunk", "created": run.created, "model": run.model,
            "system_fingerprint": system_fingerprint(run), "choices": [], "usage": _usage(run)}


def sse(event: dict) -> bytes:
    return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"


def sse_error(err: ApiError) -> bytes:
    # After the first byte the HTTP status is gone; OpenAI's SDKs raise on an in-band error event.
    return b"data: " + json.dumps(err.body(), separators=(",", ":")).encode() + b"\n\n"


def json_body(obj: dict) -> bytes:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()


def _typed_usage(run: ChatRun) -> router_pb2.Usage:
    u = run.usage
    return router_pb2.Usage(prompt_tokens=u.prompt_tokens, completion_tokens=u.completion_tokens,
                            total_tokens=u.total_tokens)


def typed_completion(run: ChatRun, text: str) -> router_pb2.CreateChatCompletionResponse:
    return router_pb2.CreateChatCompletionResponse(
        id=run.id, object="chat.completion", created=run.created, model=run.model,
        system_fingerprint=system_fingerprint(run),
        choices=[router_pb2.ChatCompletionChoice(
            index=0, message=router_pb2.AssistantMessage(role="assistant", content=text),
            finish_reason=run.finish_reason or "stop")],
        usage=_typed_usage(run))


def typed_chunk(run: ChatRun, *, role: str = "", content: str | None = None, finish_reason: str = "",
                with_usage: bool = False) -> router_pb2.StreamChatCompletionResponse:
    base = dict(id=run.id, object="chat.completion.chunk", created=run.created, model=run.model)
    if with_usage:
        return router_pb2.StreamChatCompletionResponse(**base, usage=_typed_usage(run))
    delta = router_pb2.ChunkDelta(role=role)
    if content is not None:
        delta.content = content
    return router_pb2.StreamChatCompletionResponse(
        **base, choices=[router_pb2.ChatCompletionChunkChoice(index=0, delta=delta, finish_reason=finish_reason)])
