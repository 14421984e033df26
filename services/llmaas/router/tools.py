"""Function calling: `tools`, `tool_choice` and `parallel_tool_calls` validated into a ToolSpec, and the constrained
decoding that makes a required call valid.

How a call crosses the platform (the same on CPU and GPU, since Triton's vLLM backend renders no template and parses
no tool calls: the router does both, as vLLM's OpenAI server would):
- `auto`: the tools are rendered into the prompt (llmaas.router.tool_prompt) and the model answers in free text; a
  `<tool_call>{"name": ..., "arguments": {...}}</tool_call>` block in its output (the Hermes format vLLM's `hermes`
  parser reads) becomes `message.tool_calls` (llmaas.router.tool_output).
- `required`: the backend's guided decoding (`sampling_parameters.guided_decoding.json`, llama.cpp's grammar on CPU,
  vLLM's xgrammar/outlines on GPU) forces the output to be a JSON array of calls `[{"name": <one of the tools>,
  "arguments": <that tool's parameters schema>}]` (one call when parallel_tool_calls is false).
- a named function: guided decoding forces the output to be that function's arguments (its parameters schema), as
  vLLM does for a named tool_choice.
- `none`: the tools are not rendered, the output is text.
So a required or named call always has arguments that parse and match the schema (unless max_tokens cut it: then
finish_reason is `length`, as OpenAI's).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

from google.protobuf import json_format, struct_pb2

from llmaas.common.errors import invalid_request
from llmaas.router.response_format import MAX_SCHEMA_BYTES, check_schema, check_strict, ints

MAX_TOOLS = 128
NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
# A function declared without `parameters` takes none (OpenAI's rule).
NO_PARAMETERS = {"type": "object", "properties": {}, "additionalProperties": False}


@dataclass(frozen=True)
class Tool:
    name: str
    description: str
    parameters: dict
    strict: bool


@dataclass(frozen=True)
class ToolSpec:
    tools: tuple[Tool, ...]
    # "auto", "required", "none" or "function" (then `function` names it).
    choice: str
    function: str = ""
    parallel: bool = True

    @property
    def renders_tools(self) -> bool:
        return self.choice != "none"

    def definitions(self) -> list[dict]:
        """OpenAI's tool objects, as chat templates receive them (`tools`)."""
        return [{"type": "function", "function": {"name": t.name, "description": t.description,
                                                  "parameters": t.parameters}} for t in self.tools]

    def guided_decoding(self) -> dict | None:
        """vLLM's guided decoding for a call that must happen, or None (auto, none)."""
        if self.choice == "function":
            return {"json": next(t.parameters for t in self.tools if t.name == self.function)}
        if self.choice != "required":
            return None
        calls = [{"type": "object", "properties": {"name": {"const": t.name}, "arguments": t.parameters},
                  "required": ["name", "arguments"], "additionalProperties": False} for t in self.tools]
        schema: dict = {"type": "array", "items": calls[0] if len(calls) == 1 else {"anyOf": calls}, "minItems": 1}
        if not self.parallel:
            schema["maxItems"] = 1
        return {"json": schema}


def _tool(value: struct_pb2.Struct, i: int) -> Tool:
    param = f"tools[{i}]"
    data = json_format.MessageToDict(value, preserving_proto_field_name=True)
    kind = data.get("type")
    if kind != "function":
        raise invalid_request(f"Invalid value: '{kind}'. Supported values are: 'function'.", param=f"{param}.type",
                              code="invalid_value")
    function = data.get("function")
    if not isinstance(function, dict):
        raise invalid_request(f"Missing required parameter: '{param}.function'.", param=f"{param}.function",
                              code="missing_required_parameter")
    unknown = sorted(set(function) - {"name", "description", "parameters", "strict"})
    if unknown:
        raise invalid_request(f"Unrecognized request argument supplied: {param}.function.{unknown[0]}",
                              param=f"{param}.function.{unknown[0]}", code="unknown_parameter")
    name = function.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise invalid_request(f"Invalid '{param}.function.name': string does not match pattern. Expected a string "
                              f"that matches the pattern '^[a-zA-Z0-9_-]+$' of at most 64 characters.",
                              param=f"{param}.function.name", code="invalid_value")
    description = function.get("description", "")
    if not isinstance(description, str):
        raise invalid_request(f"Invalid type for '{param}.function.description': expected a string.",
                              param=f"{param}.function.description", code="invalid_type")
    parameters = function.get("parameters", NO_PARAMETERS)
    if not isinstance(parameters, dict):
        raise invalid_request(f"Invalid type for '{param}.function.parameters': expected an object (a JSON schema).",
                              param=f"{param}.function.parameters", code="invalid_type")
    if len(json.dumps(parameters)) > MAX_SCHEMA_BYTES:
        raise invalid_request(f"Invalid '{param}.function.parameters': the schema is longer than {MAX_SCHEMA_BYTES} "
                              f"bytes.", param=f"{param}.function.parameters", code="invalid_value")
    parameters = ints(parameters)
    check_schema(parameters, "parameters", root=f"{param}.function")
    strict = function.get("strict", False)
    if not isinstance(strict, bool):
        raise invalid_request(f"Invalid type for '{param}.function.strict': expected a boolean.",
                              param=f"{param}.function.strict", code="invalid_type")
    if strict:
        check_strict(parameters or NO_PARAMETERS, f"function '{name}'", f"{param}.function.parameters")
    return Tool(name, description, parameters or NO_PARAMETERS, strict)


def _choice(value: struct_pb2.Value, names: set[str]) -> tuple[str, str]:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return ("auto" if names else "none"), ""
    if kind == "string_value":
        if value.string_value not in ("none", "auto", "required"):
            raise invalid_request(f"Invalid value: '{value.string_value}'. Supported values are: 'none', 'auto', and "
                                  f"'required'.", param="tool_choice", code="invalid_value")
        return value.string_value, ""
    if kind != "struct_value":
        raise invalid_request("Invalid type for 'tool_choice': expected one of a string or an object.",
                              param="tool_choice", code="invalid_type")
    data = json_format.MessageToDict(value.struct_value)
    if data.get("type") != "function":
        raise invalid_request(f"Invalid value: '{data.get('type')}'. Supported values are: 'function'.",
                              param="tool_choice.type", code="invalid_value")
    name = (data.get("function") or {}).get("name") if isinstance(data.get("function"), dict) else None
    if not isinstance(name, str):
        raise invalid_request("Missing required parameter: 'tool_choice.function.name'.",
                              param="tool_choice.function.name", code="missing_required_parameter")
    if name not in names:
        raise invalid_request(f"Invalid value for 'tool_choice': function '{name}' is not among the 'tools'.",
                              param="tool_choice.function.name", code="invalid_value")
    return "function", name


def parse_tools(req) -> ToolSpec | None:
    """The request's tools (None when it has none). `tool_choice`/`parallel_tool_calls` without tools are OpenAI's
    400s."""
    if not req.tools:
        if req.tool_choice.WhichOneof("kind") not in (None, "null_value"):
            raise invalid_request("Invalid value for 'tool_choice': 'tool_choice' is only allowed when 'tools' are "
                                  "specified.", param="tool_choice", code="invalid_value")
        if req.HasField("parallel_tool_calls"):
            raise invalid_request("Invalid value for 'parallel_tool_calls': 'parallel_tool_calls' is only allowed "
                                  "when 'tools' are specified.", param="parallel_tool_calls", code="invalid_value")
        return None
    if len(req.tools) > MAX_TOOLS:
        raise invalid_request(f"Invalid 'tools': array too long. Expected an array with maximum length {MAX_TOOLS}, "
                              f"but got an array with length {len(req.tools)} instead.", param="tools",
                              code="array_above_max_length")
    tools = tuple(_tool(t, i) for i, t in enumerate(req.tools))
    names = [t.name for t in tools]
    if len(set(names)) != len(names):
        raise invalid_request("Invalid 'tools': function names must be unique.", param="tools", code="invalid_value")
    choice, function = _choice(req.tool_choice, set(names))
    parallel = req.parallel_tool_calls if req.HasField("parallel_tool_calls") else True
    return ToolSpec(tools, choice, function, parallel)
