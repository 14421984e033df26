"""POST /v1/completions, OpenAI's legacy text completions, on the chat pipeline.

The request becomes ChatParams with one user message, the prompt, and `raw_prompt` set: the pipeline sends it to the
model as it is (no chat template) and does everything else as for a chat completion (auth, the guard on the prompt,
metering, the audit record, traces). The answer is OpenAI's `text_completion` object (streamed: the same object per
event), with the legacy logprobs shape (`tokens`, `token_logprobs`, `top_logprobs` maps, `text_offset`).

Served: a prompt string (or an array of one string), max_tokens (OpenAI's default 16), temperature, top_p, stop,
presence/frequency penalties, seed, user, n=1, best_of=1, logprobs 0..5, echo (without logprobs), stream and
stream_options. Refused with a 400 naming the field: several prompts or token arrays (the router has no tokenizer),
suffix (no model here does fill-in-the-middle), echo with logprobs (prompt logprobs are not produced), logit_bias.
"""

from __future__ import annotations

import json

from llmaas.common.errors import invalid_request
from llmaas.router.chat_output import logprob_entries
from llmaas.router.params import (
    MAX_MESSAGE_BYTES,
    ChatParams,
    Message,
    _range,
    _stop,
    _utf8_size,
    context_exceeded,
)
from llmaas.router.v1 import router_pb2

REST_COMPLETIONS = "POST /v1/completions"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_LOGPROBS = 5


def _prompt(value) -> str:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return value.string_value
    if kind == "list_value":
        items = value.list_value.values
        if len(items) == 1 and items[0].WhichOneof("kind") == "string_value":
            return items[0].string_value
        if items and all(v.WhichOneof("kind") == "number_value" for v in items):
            raise invalid_request("Invalid 'prompt': token arrays are not supported; send the prompt as text.",
                                  param="prompt", code="unsupported_value")
        raise invalid_request("Invalid 'prompt': only one prompt per request is supported (a string, or an array of "
                              "one string).", param="prompt", code="unsupported_value")
    if kind is None or kind == "null_value":
        raise invalid_request("Missing required parameter: 'prompt'.", param="prompt",
                              code="missing_required_parameter")
    raise invalid_request("Invalid type for 'prompt': expected a string or an array of strings.", param="prompt",
                          code="invalid_type")


def parse_completion_request(req: router_pb2.CreateCompletionRequest, *, stream: bool | None = None) -> ChatParams:
    if not req.model:
        raise invalid_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    prompt = _prompt(req.prompt)
    size = _utf8_size(prompt)
    if size > MAX_MESSAGE_BYTES:
        raise context_exceeded(f"Invalid 'prompt': string too long. Expected at most {MAX_MESSAGE_BYTES} bytes, but "
                               f"got {size} bytes instead.")
    if req.suffix.WhichOneof("kind") not in (None, "null_value"):
        raise invalid_request("Invalid parameter 'suffix': no model here completes between a prompt and a suffix.",
                              param="suffix", code="unsupported_parameter")
    for name in ("n", "best_of"):
        if req.HasField(name) and getattr(req, name) != 1:
            raise invalid_request(f"Only {name}=1 is supported.", param=name, code="unsupported_value")
    if len(req.logit_bias.fields):
        raise invalid_request("Invalid parameter 'logit_bias': logit_bias is not supported.", param="logit_bias",
                              code="unsupported_parameter")
    if req.HasField("logprobs") and not 0 <= req.logprobs <= MAX_LOGPROBS:
        raise invalid_request(f"Invalid 'logprobs': expected a value between 0 and {MAX_LOGPROBS}, but got "
                              f"{req.logprobs} instead.", param="logprobs", code="invalid_value")
    if req.echo and req.HasField("logprobs"):
        raise invalid_request("Invalid parameter 'echo': echo with logprobs needs the prompt's logprobs, which are not "
                              "produced.", param="echo", code="unsupported_parameter")
    if req.HasField("max_tokens") and req.max_tokens < 1:
        raise invalid_request(f"Invalid 'max_tokens': integer below minimum value. Expected a value >= 1, but got "
                              f"{req.max_tokens} instead.", param="max_tokens", code="integer_below_min_value")
    if req.HasField("top_k") and req.top_k < -1:
        raise invalid_request("Invalid 'top_k': expected -1 (disabled) or a positive integer.", param="top_k",
                              code="integer_below_min_value")
    temperature = _range(req, "temperature", 0.0, 2.0)
    top_p = _range(req, "top_p", 0.0, 1.0)
    if top_p == 0.0:  # as on chat: only the most likely token
        temperature, top_p = 0.0, None
    wants_stream = req.stream if stream is None else stream
    return ChatParams(
        model=req.model, messages=(Message(role="user", content=prompt, size=size),), stream=wants_stream,
        include_usage=wants_stream and req.stream_options.include_usage,
        max_tokens=req.max_tokens if req.HasField("max_tokens") else DEFAULT_MAX_TOKENS,
        max_tokens_param="max_tokens", prompt_bytes=size, temperature=temperature, top_p=top_p,
        top_k=req.top_k if req.HasField("top_k") and req.top_k not in (0, -1) else None,
        presence_penalty=_range(req, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_range(req, "frequency_penalty", -2.0, 2.0),
        seed=req.seed if req.HasField("seed") else None, stop=_stop(req.stop), user=req.user, wants_tools=False,
        logprobs=req.HasField("logprobs"), top_logprobs=req.logprobs, raw_prompt=True, echo=req.echo)


def legacy_logprobs(deltas, top: int, offset: int) -> dict:
    """The legacy shape: parallel arrays, top_logprobs as {token: logprob} maps, text offsets from `offset`."""
    tokens, token_logprobs, tops, offsets = [], [], [], []
    for d in deltas:
        for entry in logprob_entries(d.logprobs, top, skip_eos=not d.text and d.finish_reason == "stop"):
            tokens.append(entry["token"])
            token_logprobs.append(entry["logprob"])
            tops.append({t["token"]: t["logprob"] for t in entry["top_logprobs"]})
            offsets.append(offset)
            offset += len(entry["token"])
    return {"tokens": tokens, "token_logprobs": token_logprobs, "top_logprobs": tops, "text_offset": offsets}


def _usage(run) -> dict:
    u = run.usage
    return {"prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "total_tokens": u.total_tokens}


def _object(run, choices: list[dict], fingerprint: str) -> dict:
    return {"id": run.id.replace("chatcmpl-", "cmpl-", 1), "object": "text_completion", "created": run.created,
            "model": run.model, "system_fingerprint": fingerprint, "choices": choices}


def completion(run, deltas: list, fingerprint: str) -> dict:
    params = run.params
    prefix = params.messages[0].content if params.echo else ""
    text = prefix + "".join(d.text for d in deltas)
    logprobs = legacy_logprobs(deltas, params.top_logprobs, 0) if params.logprobs else None
    body = _object(run, [{"text": text, "index": 0, "logprobs": logprobs,
                          "finish_reason": run.finish_reason or "stop"}], fingerprint)
    body["usage"] = _usage(run)
    return body


class CompletionStream:
    """The SSE events of a streamed completion."""

    def __init__(self, run, fingerprint: str) -> None:
        self.run = run
        self.fingerprint = fingerprint
        self.offset = 0

    def _event(self, text: str, logprobs: dict | None, finish_reason: str | None) -> bytes:
        event = _object(self.run, [{"text": text, "index": 0, "logprobs": logprobs, "finish_reason": finish_reason}],
                        self.fingerprint)
        if self.run.params.include_usage:
            event["usage"] = None
        return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def start(self) -> bytes:
        params = self.run.params
        if not params.echo or not params.messages[0].content:
            return b""
        self.offset = len(params.messages[0].content)
        return self._event(params.messages[0].content, None, None)

    def delta(self, d) -> bytes:
        params = self.run.params
        logprobs = legacy_logprobs([d], params.top_logprobs, self.offset) if params.logprobs else None
        if not d.text and not (logprobs and logprobs["tokens"]):
            return b""
        self.offset += len(d.text)
        return self._event(d.text, logprobs, None)

    def end(self) -> bytes:
        data = self._event("", None, self.run.finish_reason or "stop")
        if self.run.params.include_usage:
            event = _object(self.run, [], self.fingerprint)
            event["usage"] = _usage(self.run)
            data += b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
        return data
