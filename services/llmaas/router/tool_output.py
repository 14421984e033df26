"""The model's output read back as OpenAI tool calls (see llmaas.router.tools for the three modes).

- named function: the output is the arguments (guided decoding made it match the schema);
- required: the output is a JSON array of {"name", "arguments"} (guided too);
- auto: Hermes `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` blocks in free text; the text before the
  first block is the message's content. A block that is not a call to one of the tools (bad JSON, unknown name) leaves
  the whole output as content, as vLLM's hermes parser does: never a call the client did not declare.

`ToolStream` does the same incrementally for streaming, in OpenAI's delta shape: a call's first delta carries its
index, id, type and name with empty arguments, the next ones argument fragments. A named call's arguments stream as
the model writes them; an auto call is sent when its block closes (the name must be known first); a required call's
arguments stream as they are written once its name is known (the grammar writes `name` before `arguments`, in the
schema's order; otherwise each call is sent when its object closes).
"""

from __future__ import annotations

import json
import re
import secrets
import string
from dataclasses import dataclass

from llmaas.router.tools import ToolSpec

OPEN, CLOSE = "<tool_call>", "</tool_call>"
_NAME = re.compile(r'"name"\s*:\s*("(?:[^"\\]|\\.)*")')
_ARGUMENTS = re.compile(r'"arguments"\s*:\s*$')
_ID_ALPHABET = string.ascii_letters + string.digits


def call_id() -> str:
    return "call_" + "".join(secrets.choice(_ID_ALPHABET) for _ in range(24))


@dataclass
class Call:
    name: str
    arguments: str  # JSON text
    id: str = ""

    def __post_init__(self) -> None:
        self.id = self.id or call_id()

    def message_entry(self) -> dict:
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}


def _as_call(obj, names: set[str]) -> Call | None:
    if not isinstance(obj, dict) or obj.get("name") not in names:
        return None
    arguments = obj.get("arguments", obj.get("parameters", {}))
    if not isinstance(arguments, dict):
        return None
    return Call(obj["name"], json.dumps(arguments, ensure_ascii=False))


def _hermes_block(body: str, names: set[str]) -> Call | None:
    try:
        return _as_call(json.loads(body), names)
    except ValueError:
        return None


def parse_auto(text: str, spec: ToolSpec) -> tuple[str | None, list[Call]]:
    """(content, calls) of a free-text answer. Content is None when the answer is only calls."""
    start = text.find(OPEN)
    if start == -1:
        return text, []
    names = {t.name for t in spec.tools}
    calls, pos = [], start
    while pos != -1:
        end = text.find(CLOSE, pos)
        body = text[pos + len(OPEN):end if end != -1 else len(text)]
        call = _hermes_block(body.strip(), names)
        if call is None:
            return text, []
        calls.append(call)
        if end == -1:
            break
        pos = text.find(OPEN, end)
    if not spec.parallel:
        calls = calls[:1]
    content = text[:start].strip()
    return content or None, calls


def parse_required(text: str, spec: ToolSpec) -> list[Call] | None:
    names = {t.name for t in spec.tools}
    try:
        data = json.loads(text)
    except ValueError:
        return None  # cut by max_tokens
    calls = [_as_call(item, names) for item in (data if isinstance(data, list) else [data])]
    return None if not calls or None in calls else calls


def parse_output(text: str, spec: ToolSpec) -> tuple[str | None, list[Call]]:
    """(content, calls) of a whole answer."""
    if spec.choice == "function":
        return None, [Call(spec.function, text)]
    if spec.choice == "required":
        calls = parse_required(text, spec)
        return (text, []) if calls is None else (None, calls)
    if spec.choice == "auto":
        return parse_auto(text, spec)
    return text, []


def _header(index: int, call: Call) -> dict:
    return {"tool_calls": [{"index": index, "id": call.id, "type": "function",
                            "function": {"name": call.name, "arguments": ""}}]}


def _fragment(index: int, arguments: str) -> dict:
    return {"tool_calls": [{"index": index, "function": {"arguments": arguments}}]}


def _partial_open(text: str) -> int:
    """Length of the longest suffix of `text` that could begin `<tool_call>` (held back from content)."""
    for n in range(min(len(OPEN) - 1, len(text)), 0, -1):
        if OPEN.startswith(text[-n:]):
            return n
    return 0


class ToolStream:
    """Streamed output -> OpenAI chunk deltas (dicts for `choices[0].delta`)."""

    def __init__(self, spec: ToolSpec) -> None:
        self.spec = spec
        self.calls = 0
        self._buffer = ""
        self._in_call = False
        self._names = {t.name for t in spec.tools}
        self._done = False  # auto: a parallel_tool_calls=false answer had its one call
        self._required = _RequiredStream(self) if spec.choice == "required" else None

    def feed(self, text: str) -> list[dict]:
        if not text:
            return []
        mode = self.spec.choice
        if mode == "function":
            out = [] if self.calls else [_header(0, Call(self.spec.function, ""))]
            self.calls = 1
            return out + [_fragment(0, text)]
        if mode == "required":
            return self._required.feed(text)
        if mode != "auto":
            return [{"content": text}]
        self._buffer += text
        return self._scan(final=False)

    def end(self) -> list[dict]:
        mode = self.spec.choice
        if mode == "function" and not self.calls:
            self.calls = 1
            return [_header(0, Call(self.spec.function, ""))]
        if mode == "required":
            return self._required.end()
        if mode == "auto":
            return self._scan(final=True)
        return []

    def _emit(self, calls: list[Call]) -> list[dict]:
        out = []
        for call in calls:
            out += [_header(self.calls, call), _fragment(self.calls, call.arguments)]
            self.calls += 1
        return out

    def _scan(self, final: bool) -> list[dict]:
        out = []
        while self._buffer:
            if self._done:
                self._buffer = ""  # text after the one call allowed: dropped, as parse_auto does
                break
            if not self._in_call:
                start = self._buffer.find(OPEN)
                if start == -1:
                    keep = 0 if final else _partial_open(self._buffer)
                    text, self._buffer = self._buffer[:len(self._buffer) - keep], self._buffer[len(self._buffer) - keep:]
                    # Whitespace between calls is not content.
                    if text and not (self.calls and not text.strip()):
                        out.append({"content": text})
                    break
                if start and not (self.calls and not self._buffer[:start].strip()):
                    out.append({"content": self._buffer[:start]})
                self._buffer, self._in_call = self._buffer[start + len(OPEN):], True
            end = self._buffer.find(CLOSE)
            if end == -1 and not final:
                break
            body = self._buffer if end == -1 else self._buffer[:end]
            call = _hermes_block(body.strip(), self._names)
            if call is None:
                # Not a call to a declared tool: what the model wrote goes out as text.
                out.append({"content": OPEN + (self._buffer if end == -1 else self._buffer[:end + len(CLOSE)])})
            else:
                out += self._emit([call])
                self._done = not self.spec.parallel
            self._buffer = "" if end == -1 else self._buffer[end + len(CLOSE):]
            self._in_call = False
        return out


class _RequiredStream:
    """The guided array `[{"name": ..., "arguments": {...}}, ...]` read as it is written: a small JSON scanner
    (depth, strings) finds each call object, its name and its arguments' extent."""

    def __init__(self, owner: ToolStream) -> None:
        self.owner = owner
        self.text = ""
        self.pos = 0  # scanned up to here
        self.depth = 0
        self.in_string = self.escape = False
        self.item_start = -1  # the current call object's "{"
        self.args_start = -1  # its arguments' first character
        self.sent = -1  # arguments sent up to here (-1: header not sent)
        self.any_call = False

    def feed(self, text: str) -> list[dict]:
        self.text += text
        out = []
        while self.pos < len(self.text):
            c = self.text[self.pos]
            self.pos += 1
            if self.in_string:
                self.in_string, self.escape = (not (c == '"' and not self.escape)), (c == "\\" and not self.escape)
                continue
            if c == '"':
                self.in_string = True
            elif c in "{[":
                self.depth += 1
                if self.depth == 2 and c == "{":
                    self.item_start, self.args_start, self.sent = self.pos - 1, -1, -1
                elif self.depth == 3 and self.args_start < 0 and self.item_start >= 0 and \
                        _ARGUMENTS.search(self.text, self.item_start, self.pos - 1):
                    self.args_start = self.pos - 1
                    out += self._header()
            elif c in "}]":
                self.depth -= 1
                if self.depth == 2 and self.args_start >= 0 and self.sent >= 0:
                    out += self._fragment(self.pos)
                elif self.depth == 1 and c == "}" and self.item_start >= 0:
                    out += self._close_item()
        if self.sent >= 0 and self.args_start >= 0 and self.depth >= 3:
            out += self._fragment(self.pos)
        return out

    def _header(self) -> list[dict]:
        match = _NAME.search(self.text, self.item_start, self.args_start)
        if match is None:
            return []  # arguments before the name: sent whole when the object closes
        name = json.loads(match.group(1))
        self.sent = self.args_start
        self.any_call = True
        return [_header(self.owner.calls, Call(name, ""))]

    def _fragment(self, end: int) -> list[dict]:
        piece, self.sent = self.text[self.sent:end], end
        return [_fragment(self.owner.calls, piece)] if piece else []

    def _close_item(self) -> list[dict]:
        out = []
        if self.sent < 0:
            call = _as_call(_loads(self.text[self.item_start:self.pos]), {t.name for t in self.owner.spec.tools})
            if call is not None:
                out = [_header(self.owner.calls, call), _fragment(self.owner.calls, call.arguments)]
                self.any_call = True
        if out or self.sent >= 0:
            self.owner.calls += 1
        self.item_start, self.args_start, self.sent = -1, -1, -1
        return out

    def end(self) -> list[dict]:
        if not self.any_call and self.text:
            return [{"content": self.text}]  # cut before a call's name: the text as it is, as parse_output does
        return []


def _loads(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return None
