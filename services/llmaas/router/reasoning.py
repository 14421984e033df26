"""A reasoning model's output split into its reasoning and its answer, as vLLM's reasoning parsers do.

The catalogue says how each reasoning model writes its reasoning (llmaas.catalog.entries.ReasoningFormat): between a
start and an end marker (`<think>` ... `</think>` by default) at the beginning of its output, or, with an empty start
marker, from the first token (its chat template opened the reasoning, as DeepSeek-R1's does) to the end marker. The
text between the markers is `reasoning_content`; what follows the end marker, without its leading whitespace, is the
answer (`content`), the only part tool-call parsing and structured outputs see. An output that does not begin with
the start marker has no reasoning: all of it is content, untouched. An output that ends inside its reasoning (cut by
max_tokens) is all reasoning.

`ReasoningSplitter` works on the stream, one delta at a time: a marker may be split across deltas (the deterministic
test model writes `</think>` as four tokens), so the tail that could begin a marker is held back until the next delta
tells (or the output ends). `ReasoningTokens` counts the reasoning's tokens from the backend's per-response output
token counts: every token produced before, and with, the end marker.

Only reasoning models get either (llmaas.router.chat_output, llmaas.router.pipeline): a plain request does no
per-token work here.
"""

from __future__ import annotations

_OPENING, _REASONING, _AFTER, _CONTENT = range(4)


def _partial_suffix(text: str, marker: str) -> int:
    """Length of the longest suffix of `text` that begins `marker` (held back: the next delta may complete it)."""
    for n in range(min(len(marker) - 1, len(text)), 0, -1):
        if marker.startswith(text[-n:]):
            return n
    return 0


class ReasoningSplitter:
    """Streamed text -> (reasoning, content) pieces. `constrained`: the backend's guided decoding writes the answer
    from the first token (response_format, a required tool call), so a model whose template opens the reasoning
    (empty start marker) writes none."""

    def __init__(self, start: str, end: str, *, constrained: bool = False) -> None:
        self.start, self.end = start, end
        self._held = ""
        if start:
            self._state = _OPENING
        else:
            self._state = _CONTENT if constrained else _REASONING
        # Known once the output's beginning is read: whether it has reasoning at all.
        self.had_reasoning = self._state == _REASONING

    @property
    def closed(self) -> bool:
        """The reasoning is over (its end marker came) or there is none: the rest of the output is content."""
        return self._state >= _AFTER

    def feed(self, text: str) -> tuple[str, str]:
        if self._state == _CONTENT:
            return "", text
        text, self._held = self._held + text, ""
        if self._state == _OPENING:
            lead = text.lstrip()
            if lead.startswith(self.start):
                self._state, self.had_reasoning = _REASONING, True
                text = lead[len(self.start):]
            elif self.start.startswith(lead):  # only whitespace or the marker's beginning so far: wait
                self._held = text
                return "", ""
            else:
                self._state = _CONTENT
                return "", text
        reasoning = ""
        if self._state == _REASONING:
            at = text.find(self.end)
            if at == -1:
                keep = _partial_suffix(text, self.end)
                self._held = text[len(text) - keep:] if keep else ""
                return text[:len(text) - keep], ""
            reasoning, text = text[:at], text[at + len(self.end):]
            self._state = _AFTER
        if self._state == _AFTER:
            # The answer starts at its first non-blank character (the template's "\n\n" after the marker is not
            # the answer's).
            text = text.lstrip()
            if not text:
                return reasoning, ""
            self._state = _CONTENT
        return reasoning, text

    def finish(self) -> tuple[str, str]:
        """What was held back, once the output ended: a marker's beginning that never completed is text."""
        held, self._held = self._held, ""
        if self._state == _OPENING:
            self._state = _CONTENT
            return "", held
        if self._state == _REASONING:
            return held, ""
        return "", ""


def split_reasoning(text: str, start: str, end: str, *, constrained: bool = False) -> tuple[str | None, str]:
    """(reasoning, content) of a whole output; reasoning None when the output has none."""
    splitter = ReasoningSplitter(start, end, constrained=constrained)
    reasoning, content = splitter.feed(text)
    more_reasoning, more_content = splitter.finish()
    return (reasoning + more_reasoning if splitter.had_reasoning else None), content + more_content


class ReasoningTokens:
    """Counts the reasoning's tokens as the backend produces them: each response's output tokens (vLLM's
    num_output_tokens) count while the reasoning is open, the response that closes it included. An output that
    turns out to have no reasoning counts none."""

    def __init__(self, start: str, end: str, *, constrained: bool = False) -> None:
        self._splitter = ReasoningSplitter(start, end, constrained=constrained)
        self._tokens = 0

    def feed(self, text: str, tokens: int) -> None:
        if self._splitter.closed:
            return
        if text:
            self._splitter.feed(text)
        self._tokens += tokens

    @property
    def count(self) -> int:
        return self._tokens if self._splitter.had_reasoning else 0
