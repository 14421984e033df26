"""The conversation and tools as a chat template receives them.

A template that knows tools (it mentions `tools`, as Qwen's, Llama 3.1's or Hermes' do) gets what vLLM gives it: the
structured messages (assistant `tool_calls` with their arguments as objects, `tool` messages with `tool_call_id`) and
`tools`, OpenAI's tool objects. A template that does not (SmolLM2's, a plain ChatML one) gets the documented Hermes
tool format rendered into the messages here, the format Qwen 2.5's template writes and vLLM's `hermes` parser reads:
- the tools, one JSON object per line inside <tools></tools>, with the instructions to answer
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`, at the end of the system message (one is added first if
  the conversation has none);
- an assistant message's calls as those <tool_call> blocks after its text;
- a tool message's content inside <tool_response></tool_response>.
"""

from __future__ import annotations

import json

from llmaas.guard.v1 import guard_pb2
from llmaas.router.params import ChatParams, Message
from llmaas.router.tools import ToolSpec

TOOLS_HEADER = ("# Tools\n\nYou may call one or more functions to assist with the user query.\n\nYou are provided "
                "with function signatures within <tools></tools> XML tags:\n<tools>\n")
TOOLS_FOOTER = ("\n</tools>\n\nFor each function call, return a json object with function name and arguments within "
                "<tool_call></tool_call> XML tags:\n<tool_call>\n{\"name\": <function-name>, \"arguments\": "
                "<args-json-object>}\n</tool_call>")


def template_knows_tools(source: str) -> bool:
    return "tools" in source


def _arguments(text: str):
    try:
        return json.loads(text)
    except ValueError:
        return text


def structured(messages: tuple[Message, ...]) -> list[dict]:
    """vLLM's view of the conversation for a template that renders tool calls itself."""
    out = []
    for m in messages:
        item: dict = {"role": m.role, "content": m.content}
        if m.tool_calls:
            item["tool_calls"] = [{"id": c.id, "type": "function",
                                   "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                                  for c in m.tool_calls]
        if m.tool_call_id:
            item["tool_call_id"] = m.tool_call_id
        out.append(item)
    return out


def tool_block(tools: ToolSpec) -> str:
    return TOOLS_HEADER + "\n".join(json.dumps(t, ensure_ascii=False) for t in tools.definitions()) + TOOLS_FOOTER


def call_block(name: str, arguments: str) -> str:
    return "<tool_call>\n" + json.dumps({"name": name, "arguments": _arguments(arguments)}, ensure_ascii=False) + \
        "\n</tool_call>"


def hermes(messages: tuple[Message, ...], tools: ToolSpec | None) -> list[dict]:
    """The conversation in plain {role, content} messages, tools and calls written in the Hermes format."""
    out = []
    for m in messages:
        content = m.content
        if m.tool_calls:
            content = "\n".join(([content] if content else []) + [call_block(c.name, c.arguments)
                                                                 for c in m.tool_calls])
        elif m.role == "tool":
            content = f"<tool_response>\n{content}\n</tool_response>"
        out.append({"role": m.role, "content": content})
    if tools is not None and tools.renders_tools:
        block = tool_block(tools)
        if out and out[0]["role"] in ("system", "developer"):
            out[0]["content"] = f"{out[0]['content']}\n\n{block}" if out[0]["content"] else block
        else:
            out.insert(0, {"role": "system", "content": block})
    return out


def tool_guard_parts(params: ChatParams) -> list[guard_pb2.PromptPart]:
    """What the model reads besides the messages' text: the tool definitions (the developer's, like a system prompt)
    and the calls earlier assistant messages made (tool results are `tool` messages, checked as such)."""
    parts = []
    if params.tools is not None and params.tools.renders_tools:
        parts.append(guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_SYSTEM, text="\n".join(
            json.dumps(t, ensure_ascii=False) for t in params.tools.definitions())))
    for m in params.messages:
        for c in m.tool_calls:
            parts.append(guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_ASSISTANT, text=f"{c.name} {c.arguments}"))
    return parts
