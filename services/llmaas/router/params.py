"""Validation of a chat completion request into the parameters the pipeline uses.

Every check names the offending field in `param` and uses OpenAI's wording, so clients (and the OpenAI SDK's
BadRequestError) see what they would see from OpenAI. Runs before any downstream call: a bad request costs nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from google.protobuf import struct_pb2

from llmaas.common.errors import invalid_request
from llmaas.router.v1 import router_pb2

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_STOP_SEQUENCES = 4


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    has_image: bool = False


@dataclass(frozen=True)
class ChatParams:
    model: str
    messages: tuple[Message, ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    temperature: float | None
    top_p: float | None
    top_k: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    seed: int | None
    stop: tuple[str, ...]
    user: str
    wants_tools: bool


def _range(req, name: str, lo: float, hi: float) -> float | None:
    if not req.HasField(name):
        return None
    value = getattr(req, name)
    if math.isnan(value) or value < lo:
        raise invalid_request(
            f"Invalid '{name}': decimal below minimum value. Expected a value >= {lo:g}, but got {value:g} instead.",
            param=name, code="decimal_below_min_value")
    if value > hi:
        raise invalid_request(
            f"Invalid '{name}': decimal above maximum value. Expected a value <= {hi:g}, but got {value:g} instead.",
            param=name, code="decimal_above_max_value")
    return value


def _content(value: struct_pb2.Value, param: str) -> tuple[str, bool]:
    """(text, has_image) of a message's content: a string, an array of parts, or null."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return "", False
    if kind == "string_value":
        return value.string_value, False
    if kind != "list_value":
        raise invalid_request(f"Invalid type for '{param}': expected a string or an array of content parts.",
                              param=param, code="invalid_type")
    texts, has_image = [], False
    for i, part in enumerate(value.list_value.values):
        fields = part.struct_value.fields if part.WhichOneof("kind") == "struct_value" else None
        ptype = fields["type"].string_value if fields and "type" in fields else ""
        if ptype == "text":
            texts.append(fields["text"].string_value if "text" in fields else "")
        elif ptype in ("image_url", "image"):
            has_image = True
        else:
            raise invalid_request(f"Invalid content part type at '{param}[{i}]'.", param=f"{param}[{i}].type",
                                  code="invalid_value")
    return "".join(texts), has_image


def _messages(req: router_pb2.CreateChatCompletionRequest) -> tuple[Message, ...]:
    if not req.messages:
        raise invalid_request("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                              param="messages", code="empty_array")
    out = []
    for i, m in enumerate(req.messages):
        if m.role not in ROLES:
            raise invalid_request(
                f"Invalid value: '{m.role}'. Supported values are: 'system', 'developer', 'user', 'assistant', and "
                f"'tool'.", param=f"messages[{i}].role", code="invalid_value")
        if m.role != "assistant" and m.content.WhichOneof("kind") in (None, "null_value"):
            raise invalid_request(f"Missing required parameter: 'messages[{i}].content'.",
                                  param=f"messages[{i}].content", code="missing_required_parameter")
        text, has_image = _content(m.content, f"messages[{i}].content")
        out.append(Message(role=m.role, content=text, has_image=has_image))
    return tuple(out)


def _stop(value: struct_pb2.Value) -> tuple[str, ...]:
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return ()
    if kind == "string_value":
        return (value.string_value,) if value.string_value else ()
    if kind == "list_value":
        items = value.list_value.values
        if len(items) > MAX_STOP_SEQUENCES or any(v.WhichOneof("kind") != "string_value" for v in items):
            raise invalid_request(f"Invalid 'stop': expected a string or an array of at most {MAX_STOP_SEQUENCES} "
                                  f"strings.", param="stop", code="invalid_value")
        return tuple(v.string_value for v in items if v.string_value)
    raise invalid_request("Invalid type for 'stop': expected a string or an array of strings.", param="stop",
                          code="invalid_type")


def parse_chat_request(req: router_pb2.CreateChatCompletionRequest, *, stream: bool | None = None) -> ChatParams:
    """`stream` overrides the request's own flag (the typed RPCs decide it by which method was called)."""
    if not req.model:
        raise invalid_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    messages = _messages(req)
    max_tokens = None
    for name in ("max_completion_tokens", "max_tokens"):
        if req.HasField(name):
            if getattr(req, name) < 1:
                raise invalid_request(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                                      f"{getattr(req, name)} instead.", param=name, code="integer_below_min_value")
            max_tokens = getattr(req, name)
            break
    if req.HasField("n") and req.n != 1:
        raise invalid_request("Only n=1 is supported.", param="n", code="unsupported_value")
    if req.HasField("logprobs") and req.logprobs:
        raise invalid_request("logprobs is not supported yet.", param="logprobs", code="unsupported_parameter")
    if req.HasField("top_k") and req.top_k < -1:
        raise invalid_request("Invalid 'top_k': expected -1 (disabled) or a positive integer.", param="top_k",
                              code="integer_below_min_value")
    wants_stream = req.stream if stream is None else stream
    return ChatParams(
        model=req.model,
        messages=messages,
        stream=wants_stream,
        include_usage=wants_stream and req.stream_options.include_usage,
        max_tokens=max_tokens,
        temperature=_range(req, "temperature", 0.0, 2.0),
        top_p=_range(req, "top_p", 0.0, 1.0),
        top_k=req.top_k if req.HasField("top_k") else None,
        presence_penalty=_range(req, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_range(req, "frequency_penalty", -2.0, 2.0),
        seed=req.seed if req.HasField("seed") else None,
        stop=_stop(req.stop),
        user=req.user,
        wants_tools=len(req.tools) > 0,
    )
