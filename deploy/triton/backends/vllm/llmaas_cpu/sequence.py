"""Turns generated tokens into the deltas the vLLM backend streams, with vLLM's stop semantics.

Mirrors vLLM's stop checker: min_tokens defers stop strings, EOS and stop_token_ids finish with "stop", stop strings
are cut from the output (unless include_stop_str_in_output) and, while streaming, the last len(longest stop)-1
characters are held back so a stop string is never half sent. Every token yields exactly one delta (possibly with
empty text), so per-response num_output_tokens is always 1 and sums to the output length, as in vLLM.
"""

from __future__ import annotations

import codecs
from dataclasses import dataclass

from .engines import TokenStep
from .sampling import SamplingParams


@dataclass
class Delta:
    text: str
    num_tokens: int
    # "stop" / "length" when this is the last delta, else None.
    finish_reason: str | None
    # vLLM shape: one {token_id: {"logprob", "rank", "decoded_token"}} dict per token of this delta.
    logprobs: list[dict] | None


class Sequence:
    def __init__(self, params: SamplingParams, max_new_tokens: int, keep_logprobs: bool = False):
        self.params = params
        # max_tokens, already capped by the room left in the context window.
        self.max_new_tokens = max_new_tokens
        self.keep_logprobs = keep_logprobs
        self.text = ""
        self.token_ids: list[int] = []
        self.cumulative_logprob = 0.0
        self.logprobs: list[dict] = []
        self.finish_reason: str | None = None
        self._sent = 0
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = params.stop
        self._max_stop = max((len(s) for s in stops), default=0)
        self._holdback = self._max_stop - 1 if stops and not params.include_stop_str_in_output else 0

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def add(self, step: TokenStep) -> Delta:
        """Account one generated token; returns what to send for it."""
        assert not self.finished, "token added after the sequence finished"
        p = self.params
        self.token_ids.append(step.token_id)
        n = len(self.token_ids)
        entry = None
        if step.logprobs is not None:
            self.cumulative_logprob += step.logprobs[step.token_id][0]
            entry = {tid: {"logprob": lp, "rank": rank, "decoded_token": tok}
                     for tid, (lp, rank, tok) in step.logprobs.items()}
            if self.keep_logprobs:
                self.logprobs.append(entry)

        checks_on = n > p.min_tokens  # vLLM ignores every stop condition until min_tokens are out
        previous_len = len(self.text)
        if checks_on and step.is_eos and not p.ignore_eos:
            self.finish_reason = "stop"
        elif checks_on and step.token_id in p.stop_token_ids:
            self.finish_reason = "stop"
            if p.include_stop_str_in_output:
                self.text += self._decoder.decode(step.piece)
        elif not step.is_eos:
            self.text += self._decoder.decode(step.piece)

        if not self.finished and checks_on and p.stop:
            self._check_stop_strings(previous_len)
        if not self.finished and n >= self.max_new_tokens:
            self.finish_reason = "length"
        if self.finished:
            self.text += self._decoder.decode(b"", final=True)  # an unfinished character becomes U+FFFD

        end = len(self.text) if self.finished else max(self._sent, len(self.text) - self._holdback)
        delta_text, self._sent = self.text[self._sent:end], end
        return Delta(delta_text, 1, self.finish_reason, None if entry is None else [entry])

    def _check_stop_strings(self, previous_len: int) -> None:
        # Only the new text (plus an overlap for stops spanning tokens) can contain a new match.
        start = max(0, previous_len - self._max_stop + 1)
        best = None
        for stop in self.params.stop:
            i = self.text.find(stop, start)
            if i != -1 and (best is None or i < best[0]):
                best = (i, stop)
        if best is not None:
            i, stop = best
            self.text = self.text[: i + len(stop)] if self.params.include_stop_str_in_output else self.text[:i]
            self.finish_reason = "stop"
