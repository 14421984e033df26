"""A choice's output beyond plain text: a reasoning model's reasoning (llmaas.router.reasoning), tool calls
(llmaas.router.tool_output) and logprobs, in OpenAI's shapes.

Only requests that ask for tools or logprobs, or go to a reasoning model, get a ChatOutput (ChatRun.output); a plain
request keeps the servicer's text-only path, so its cost does not change. A reasoning model's output is split first:
its reasoning goes to `reasoning_content` (vLLM's and DeepSeek's field, streamed in `delta.reasoning_content` before
the content), and only the answer after it is parsed for tool calls and given logprobs.

Logprobs come from the vLLM backend's `logprobs` output: per response, one `{token_id: {"logprob", "rank",
"decoded_token"}}` object per token, the sampled token first (vLLM inserts it before the top-k ones, as the CPU backend
does), as OpenAI's `{"token", "logprob", "bytes", "top_logprobs": [...]}` entries. The end-of-sequence token is not
shown (OpenAI shows none).
"""

from __future__ import annotations

import json

from llmaas.router.kserve import Delta
from llmaas.router.reasoning import ReasoningSplitter
from llmaas.router.tool_output import ToolStream, parse_output
from llmaas.router.tools import ToolSpec


def _entry(token: str, logprob: float) -> dict:
    return {"token": token, "logprob": logprob, "bytes": list(token.encode("utf-8"))}


def logprob_entries(raw: bytes | None, top: int, *, skip_eos: bool) -> list[dict]:
    """OpenAI's logprobs content entries of one backend response."""
    if not raw:
        return []
    try:
        tokens = json.loads(raw)
    except ValueError:
        return []
    out = []
    for position in tokens or ():
        if not position:
            continue
        candidates = list(position.values())
        sampled = candidates[0]
        token = sampled.get("decoded_token") or ""
        if skip_eos and not token:
            continue
        entry = _entry(token, max(float(sampled["logprob"]), -9999.0))
        best = sorted(candidates, key=lambda c: -c["logprob"])[:top]
        entry["top_logprobs"] = [_entry(c.get("decoded_token") or "", max(float(c["logprob"]), -9999.0))
                                 for c in best]
        out.append(entry)
    return out


def trace_chat_api(span, params) -> None:
    """Span attributes of the chat API's options (never their content: no tool names or schemas)."""
    if params.tools is not None:
        span.set_attribute("llmaas.tools", len(params.tools.tools))
        span.set_attribute("llmaas.tool_choice", params.tools.choice)
        span.set_attribute("llmaas.parallel_tool_calls", params.tools.parallel)
    if params.logprobs:
        span.set_attribute("llmaas.top_logprobs", params.top_logprobs)
    if params.raw_prompt:
        span.set_attribute("llmaas.completions", True)
    if params.reasoning_effort:
        span.set_attribute("llmaas.reasoning_effort", params.reasoning_effort)
    if params.logit_bias:
        span.set_attribute("llmaas.logit_bias", len(params.logit_bias))  # how many tokens, not which
    if low := sum(part.low for m in params.messages for part in m.images):
        span.set_attribute("llmaas.images_low_detail", low)


class ChatOutput:
    """Per run: shapes the model's deltas into OpenAI's message or chunk deltas."""

    def __init__(self, tools: ToolSpec | None, logprobs: bool, top_logprobs: int, reasoning=None,
                 constrained: bool = False) -> None:
        """`reasoning`: the model's ReasoningFormat (start and end markers), None for a model that does not reason;
        `constrained`: the backend's guided decoding writes the output."""
        self.tools = tools if tools is not None and tools.choice != "none" else None
        self.logprobs = logprobs
        self.top = top_logprobs
        self._stream = ToolStream(self.tools) if self.tools is not None else None
        self._pending: list[dict] = []  # logprobs not yet attached to a chunk
        self._called = False
        self._split = ReasoningSplitter(reasoning.start, reasoning.end, constrained=constrained) \
            if reasoning is not None else None

    @classmethod
    def for_params(cls, params, reasoning=None, constrained: bool = False) -> ChatOutput | None:
        tools = params.tools if params.tools is not None and params.tools.choice != "none" else None
        if tools is None and not params.logprobs and reasoning is None:
            return None
        return cls(tools, params.logprobs, params.top_logprobs, reasoning, constrained)

    def _entries(self, delta: Delta) -> list[dict]:
        if not self.logprobs:
            return []
        return logprob_entries(delta.logprobs, self.top, skip_eos=not delta.text and delta.finish_reason == "stop")

    def finish_reason(self, reason: str | None) -> str:
        reason = reason or "stop"
        return "tool_calls" if self._called and reason == "stop" else reason

    # Whole answer (stream false).
    def message(self, deltas: list[Delta]) -> tuple[dict, dict | None]:
        """(message, logprobs) of the choice."""
        if self._split is None:
            text, answer = "".join(d.text for d in deltas), deltas
        else:
            reasoning, text, answer = self._split_all(deltas)
        content, calls = parse_output(text, self.tools) if self.tools is not None else (text, [])
        message = {"role": "assistant", "content": content, "refusal": None}
        if self._split is not None:
            message["reasoning_content"] = reasoning
        if calls:
            self._called = True
            message["tool_calls"] = [c.message_entry() for c in calls]
        logprobs = None
        if self.logprobs:
            logprobs = {"content": [e for d in answer for e in self._entries(d)], "refusal": None}
        return message, logprobs

    def _split_all(self, deltas: list[Delta]) -> tuple[str | None, str, list[Delta]]:
        """(reasoning, answer text, the deltas the answer came from: their tokens get logprobs)."""
        reasoning, content, answer = [], [], []
        for d in deltas:
            was_closed = self._split.closed
            r, c = self._split.feed(d.text)
            reasoning.append(r)
            content.append(c)
            if was_closed or c:
                answer.append(d)
        r, c = self._split.finish()
        text = "".join(reasoning) + r
        return (text if self._split.had_reasoning else None), "".join(content) + c, answer

    # Streamed: (delta, logprobs) pairs for chunks.
    def deltas(self, delta: Delta) -> list[tuple[dict, dict | None]]:
        if self._split is None:
            self._pending += self._entries(delta)
            return self._attach(self._content(delta.text))
        was_closed = self._split.closed
        reasoning, text = self._split.feed(delta.text)
        if was_closed or text:
            self._pending += self._entries(delta)
        parts = [{"reasoning_content": reasoning}] if reasoning else []
        return self._attach(parts + self._content(text))

    def _content(self, text: str) -> list[dict]:
        if self._stream is not None:
            return self._stream.feed(text)
        return [{"content": text}] if text else []

    def end(self) -> list[tuple[dict, dict | None]]:
        """What is left when the model's output ends (before the finish chunk)."""
        parts = []
        if self._split is not None:
            reasoning, text = self._split.finish()
            parts = ([{"reasoning_content": reasoning}] if reasoning else []) + self._content(text)
        return self._attach(parts + (self._stream.end() if self._stream is not None else []))

    def leftover_logprobs(self) -> dict | None:
        if not self._pending:
            return None
        pending, self._pending = self._pending, []
        return {"content": pending, "refusal": None}

    def _attach(self, parts: list[dict]) -> list[tuple[dict, dict | None]]:
        if self._stream is not None and self._stream.calls:
            self._called = True
        if not parts:
            return []
        out = [(parts[0], self.leftover_logprobs() if self.logprobs else None)]
        return out + [(p, None) for p in parts[1:]]
