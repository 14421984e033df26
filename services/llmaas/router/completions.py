"""POST /v1/completions, OpenAI's legacy text completions, on the chat pipeline.

The request becomes ChatParams with one user message, the prompt, and `raw_prompt` set: the pipeline sends it to the
model as it is (no chat template) and does everything else as for a chat completion (auth, the guard on the prompt,
metering, the audit record, traces). The answer is OpenAI's `text_completion` object (streamed: the same object per
event), with the legacy logprobs shape (`tokens`, `token_logprobs`, `top_logprobs` maps, `text_offset`).

Served: a prompt string or an array of strings (each answered n times: choice p * n + j is prompt p's j-th,
llmaas.router.choices; at most MAX_N choices in all), max_tokens (OpenAI's default 16), temperature, top_p, stop,
presence/frequency penalties, seed, user, n, best_of equal to n, logprobs 0..5, echo (without logprobs), logit_bias
(models that list it), stream and stream_options. Refused with a 400 naming the field: token arrays (the router has no
tokenizer), best_of above n (no server-side ranking), suffix (no model here does fill-in-the-middle), echo with
logprobs (prompt logprobs are not produced).
"""

from __future__ import annotations

import json

from llmaas.common.errors import invalid_request
from llmaas.router.chat_output import logprob_entries
from llmaas.router.params import (
    MAX_MESSAGE_BYTES,
    MAX_N,
    ChatParams,
    Message,
    _range,
    _stop,
    _utf8_size,
    context_exceeded,
    include_usage,
    parse_logit_bias,
)
from llmaas.router.v1 import router_pb2

REST_COMPLETIONS = "POST /v1/completions"
DEFAULT_MAX_TOKENS = 16  # OpenAI's default for this endpoint
MAX_LOGPROBS = 5


def _prompts(value) -> list[str]:
    kind = value.WhichOneof("kind")
    if kind == "string_value":
        return [value.string_value]
    if kind == "list_value":
        items = value.list_value.values
        if items and all(v.WhichOneof("kind") == "string_value" for v in items):
            return [v.string_value for v in items]
        if items and all(v.WhichOneof("kind") in ("number_value", "list_value") for v in items):
            raise invalid_request("Invalid 'prompt': token arrays are not supported; send the prompt as text.",
                                  param="prompt", code="unsupported_value")
        raise invalid_request("Invalid 'prompt': expected a string or a non-empty array of strings.",
                              param="prompt", code="invalid_type")
    if kind is None or kind == "null_value":
        raise invalid_request("Missing required parameter: 'prompt'.", param="prompt",
                              code="missing_required_parameter")
    raise invalid_request("Invalid type for 'prompt': expected a string or an array of strings.", param="prompt",
                          code="invalid_type")


def parse_completion_request(req: router_pb2.CreateCompletionRequest, *, stream: bool | None = None) -> ChatParams:
    if not req.model:
        raise invalid_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    prompts = _prompts(req.prompt)
    sizes = [_utf8_size(prompt) for prompt in prompts]
    if max(sizes) > MAX_MESSAGE_BYTES:
        raise context_exceeded(f"Invalid 'prompt': string too long. Expected at most {MAX_MESSAGE_BYTES} bytes, but "
                               f"got {max(sizes)} bytes instead.")
    if req.suffix.WhichOneof("kind") not in (None, "null_value"):
        raise invalid_request("Invalid parameter 'suffix': no model here completes between a prompt and a suffix.",
                              param="suffix", code="unsupported_parameter")
    n = req.n if req.HasField("n") else 1
    if not 1 <= n <= MAX_N:
        raise invalid_request(f"Invalid 'n': expected a value between 1 and {MAX_N}, but got {n} instead.",
                              param="n", code="invalid_value")
    if req.HasField("best_of") and req.best_of != n:
        raise invalid_request(f"Invalid 'best_of': only best_of equal to n ({n}) is supported: choices are not ranked "
                              "on the server.", param="best_of", code="unsupported_value")
    if len(prompts) * n > MAX_N:
        raise invalid_request(f"Invalid 'prompt': {len(prompts)} prompts with n={n} make {len(prompts) * n} choices; "
                              f"at most {MAX_N} per request.", param="prompt", code="invalid_value")
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
        model=req.model,
        messages=tuple(Message(role="user", content=p, size=size) for p, size in zip(prompts, sizes, strict=True)),
        stream=wants_stream,
        include_usage=include_usage(req, wants_stream),
        max_tokens=req.max_tokens if req.HasField("max_tokens") else DEFAULT_MAX_TOKENS,
        max_tokens_param="max_tokens", prompt_bytes=max(sizes), temperature=temperature, top_p=top_p,
        top_k=req.top_k if req.HasField("top_k") and req.top_k not in (0, -1) else None,
        presence_penalty=_range(req, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_range(req, "frequency_penalty", -2.0, 2.0),
        seed=req.seed if req.HasField("seed") else None, stop=_stop(req.stop), user=req.user, wants_tools=False,
        logprobs=req.HasField("logprobs"), top_logprobs=req.logprobs, raw_prompt=True, echo=req.echo, n=n,
        logit_bias=parse_logit_bias(req.logit_bias))


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


def _choice(run, index: int, deltas: list) -> dict:
    params = run.params
    prefix = params.messages[0].content if params.echo else ""
    logprobs = legacy_logprobs(deltas, params.top_logprobs, 0) if params.logprobs else None
    return {"text": prefix + "".join(d.text for d in deltas), "index": index, "logprobs": logprobs,
            "finish_reason": run.finish_reason or "stop"}


def completion(run, per_choice: list[list], fingerprint: str) -> dict:
    """The text_completion object of each choice's deltas (pipeline.collect)."""
    choices = [_choice(choice, index, deltas)
               for index, (choice, deltas) in enumerate(zip(run.choices or (run,), per_choice, strict=True))]
    body = _object(run, choices, fingerprint)
    body["usage"] = _usage(run)
    return body


class CompletionStream:
    """The SSE events of a streamed completion: (choice index, delta) pairs in, events out."""

    def __init__(self, run, fingerprint: str) -> None:
        self.run = run
        self.fingerprint = fingerprint
        self.choices = run.choices or (run,)
        self.offsets = [0] * len(self.choices)

    def _event(self, index: int, text: str, logprobs: dict | None, finish_reason: str | None) -> bytes:
        event = _object(self.run, [{"text": text, "index": index, "logprobs": logprobs,
                                    "finish_reason": finish_reason}], self.fingerprint)
        if self.run.params.include_usage:
            event["usage"] = None
        return b"data: " + json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    def start(self) -> bytes:
        """Each choice's prompt first, with echo."""
        data = b""
        for index, choice in enumerate(self.choices):
            prompt = choice.params.messages[0].content
            if choice.params.echo and prompt:
                self.offsets[index] = len(prompt)
                data += self._event(index, prompt, None, None)
        return data

    def delta(self, index: int, d) -> bytes:
        """A choice's delta, and its finish event when the delta is its last."""
        choice = self.choices[index]
        params = choice.params
        logprobs = legacy_logprobs([d], params.top_logprobs, self.offsets[index]) if params.logprobs else None
        data = b""
        if d.text or (logprobs and logprobs["tokens"]):
            self.offsets[index] += len(d.text)
            data = self._event(index, d.text, logprobs, None)
        if d.final:
            data += self._event(index, "", None, choice.finish_reason or "stop")
        return data

    def end(self) -> bytes:
        """The usage when asked for (after every choice's finish event)."""
        if not self.run.params.include_usage:
            return b""
        event = _object(self.run, [], self.fingerprint)
        event["usage"] = _usage(self.run)
        return b"data: " + json.dumps(event, separators=(",", ":")).encode() + b"\n\n"
