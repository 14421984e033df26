"""Validation of a chat completion request into the parameters the pipeline uses.

Every check names the offending field in `param` and uses OpenAI's wording, so clients (and the OpenAI SDK's
BadRequestError) see what they would see from OpenAI. Runs before any downstream call: a bad request costs nothing.

Every value OpenAI's spec allows is either served or refused here with a 400 naming the field, never passed on to
fail in the backend (vLLM's SamplingParams is stricter than OpenAI's spec in places): `top_p: 0` (OpenAI: valid,
vLLM: top_p must be in (0, 1]) is served as greedy decoding, `top_k: 0` as "no top-k".

The size limits (message count, bytes per message, bytes of all messages) are checked here too, in one O(size) pass,
before the guard and the model see anything; the limits that depend on the model's context are in `check_context`.
Both refuse with 400 `context_length_exceeded` (the client's remedy is the same: a shorter conversation), naming the
limit.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from google.protobuf import struct_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.json_fields import unrecognized
from llmaas.router.response_format import parse_response_format
from llmaas.router.tools import ToolSpec, parse_tools
from llmaas.router.v1 import router_pb2

ROLES = {"system", "developer", "user", "assistant", "tool"}
MAX_STOP_SEQUENCES = 4
# OpenAI's ReasoningEffort values; which of them a model takes is its catalogue entry's (llmaas.router.pipeline).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
MAX_N = 128  # OpenAI's range for n; also the most choices one request makes (llmaas.router.choices)
MAX_TOP_LOGPROBS = 20
LOGIT_BIAS_RANGE = 100.0
# OpenAI's own bound on the number of biased tokens.
MAX_LOGIT_BIAS = 300
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512

# Request limits, checked before the guard and the model (README "Request limits (router)").
MAX_MESSAGES = 2048
MAX_MESSAGE_BYTES = 1024 * 1024  # UTF-8 bytes of one message's text
MAX_PROMPT_BYTES = 2 * 1024 * 1024  # UTF-8 bytes of all messages' text
# The router has no tokenizer. A prompt of B bytes has at most B tokens (plus a few the tokenizer adds: BOS, a prefix
# space), and at least B / MAX_BYTES_PER_TOKEN: no tokenizer we serve packs more than 16 bytes into a token on average
# over a prompt (English averages about 4, code about 3 to 6; only long runs of one character do better, and those
# are refused here as over the limit rather than sent). So a prompt longer than max_model_len * 16 bytes, or whose
# lower bound plus max_tokens exceeds the context, is refused up front; anything closer is left to the backend, which
# counts exactly, and whose verdict (in-band) becomes the same 400 (llmaas.router.triton._backend_error).
MAX_BYTES_PER_TOKEN = 16
# Tokens a tokenizer may add to a prompt beyond one per byte (BOS/EOS, SentencePiece's prefix space).
PROMPT_TOKEN_SLACK = 8
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


@dataclass(frozen=True)
class ToolCall:
    """A call an earlier assistant message made (the history the client sends back)."""
    id: str
    name: str
    arguments: str  # JSON text, as OpenAI sends it


@dataclass(frozen=True)
class ImagePart:
    """An image part of a user message: its URL (a data URI, llmaas.router.images decodes it) and whether the client
    asked for `detail: low` (a copy at most LOW_DETAIL_SIDE pixels on its longer side)."""
    url: str = field(repr=False)
    low: bool = False


@dataclass(frozen=True)
class Message:
    role: str
    content: str
    has_image: bool = False
    size: int = 0  # UTF-8 bytes of content (and of an assistant's calls)
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str = ""  # a tool message: the call it answers
    images: tuple[ImagePart, ...] = ()  # its image parts


@dataclass(frozen=True)
class ChatParams:
    model: str
    messages: tuple[Message, ...]
    stream: bool
    include_usage: bool
    max_tokens: int | None
    # Which field max_tokens came from (max_completion_tokens or max_tokens), for the errors about it.
    max_tokens_param: str
    # UTF-8 bytes of all messages' text (the rendered prompt is longer: a lower bound of it).
    prompt_bytes: int
    temperature: float | None
    top_p: float | None
    top_k: int | None
    presence_penalty: float | None
    frequency_penalty: float | None
    seed: int | None
    stop: tuple[str, ...]
    user: str
    wants_tools: bool
    # vLLM guided decoding for response_format (llmaas.router.response_format); None for free text.
    guided_decoding: dict | None = None
    # tools, tool_choice and parallel_tool_calls (llmaas.router.tools); None without tools.
    tools: ToolSpec | None = None
    logprobs: bool = False
    top_logprobs: int = 0
    reasoning_effort: str = ""
    # /v1/completions (llmaas.router.completions): the one message is the prompt, sent without a chat template.
    raw_prompt: bool = False
    echo: bool = False
    # Choices per prompt (llmaas.router.choices); /v1/completions' several prompts are its several messages.
    n: int = 1
    # Token id -> bias (parse_logit_bias); None without.
    logit_bias: dict[int, float] | None = None

    @property
    def has_tool_calls(self) -> bool:
        return any(m.tool_calls for m in self.messages)


def include_usage(req, stream: bool) -> bool:
    """stream_options: the usage chunk when asked for; obfuscation (OpenAI's padding of events) is not offered."""
    if req.stream_options.include_obfuscation:
        raise invalid_request("Invalid 'stream_options.include_obfuscation': stream obfuscation is not offered "
                              "(false is what this service does).", param="stream_options.include_obfuscation",
                              code="unsupported_value")
    return stream and req.stream_options.include_usage


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


def _content(value: struct_pb2.Value, param: str) -> tuple[str, tuple[ImagePart, ...]]:
    """(text, image parts) of a message's content: a string, an array of parts, or null. An image part is OpenAI's
    {"type": "image_url", "image_url": {"url": ...}} or the reference's simplified {"type": "image", "image": ...}."""
    kind = value.WhichOneof("kind")
    if kind is None or kind == "null_value":
        return "", ()
    if kind == "string_value":
        return value.string_value, ()
    if kind != "list_value":
        raise invalid_request(f"Invalid type for '{param}': expected a string or an array of content parts.",
                              param=param, code="invalid_type")
    texts, images = [], []
    for i, part in enumerate(value.list_value.values):
        fields = part.struct_value.fields if part.WhichOneof("kind") == "struct_value" else None
        ptype = fields["type"].string_value if fields and "type" in fields else ""
        if ptype in _PART_KEYS:
            _known_keys(fields, _PART_KEYS[ptype], f"{param}[{i}]")
        if ptype == "text":
            if "text" not in fields or fields["text"].WhichOneof("kind") != "string_value":
                raise invalid_request(f"Missing required parameter: '{param}[{i}].text' (a string).",
                                      param=f"{param}[{i}].text", code="missing_required_parameter")
            texts.append(fields["text"].string_value)
        elif ptype == "image_url":
            holder = fields["image_url"] if "image_url" in fields else None
            inner = holder.struct_value.fields if holder is not None and holder.WhichOneof("kind") == \
                "struct_value" else {}
            _known_keys(inner, _IMAGE_URL_KEYS, f"{param}[{i}].image_url")
            url = inner["url"] if "url" in inner else None
            if url is None or url.WhichOneof("kind") != "string_value" or not url.string_value:
                raise invalid_request(f"Missing required parameter: '{param}[{i}].image_url.url'.",
                                      param=f"{param}[{i}].image_url.url", code="missing_required_parameter")
            images.append(ImagePart(url.string_value, _detail(inner, f"{param}[{i}].image_url.detail") == "low"))
        elif ptype == "image":
            url = fields["image"] if "image" in fields else None
            if url is None or url.WhichOneof("kind") != "string_value" or not url.string_value:
                raise invalid_request(f"Missing required parameter: '{param}[{i}].image'.", param=f"{param}[{i}].image",
                                      code="missing_required_parameter")
            images.append(ImagePart(url.string_value))
        else:
            raise invalid_request(f"Invalid content part type at '{param}[{i}]'.", param=f"{param}[{i}].type",
                                  code="invalid_value")
    return "".join(texts), tuple(images)


# The keys each content part may have (OpenAI's, and the reference's simplified image part); any other is a 400.
_PART_KEYS = {"text": frozenset({"type", "text"}), "image_url": frozenset({"type", "image_url"}),
              "image": frozenset({"type", "image"})}
_IMAGE_URL_KEYS = frozenset({"url", "detail"})
# `index`: a streamed call's position, which a client's accumulated stream may keep when it sends the call back.
_TOOL_CALL_KEYS = frozenset({"id", "type", "function", "index"})
_FUNCTION_CALL_KEYS = frozenset({"name", "arguments"})


def _known_keys(fields, allowed: frozenset[str], param: str) -> None:
    """A key an object of the request may not have is a 400 naming it, as at the top level (llmaas.common.json_fields):
    never dropped without a word. Null values are absences."""
    for key in fields:
        if key not in allowed and fields[key].WhichOneof("kind") != "null_value":
            raise unrecognized(f"{param}.{key[:64]}")


def _detail(fields, param: str) -> str:
    """image_url.detail: "high" and "auto" read the image at its full resolution, "low" a copy at most 512 px on its
    longer side (llmaas.router.images), as OpenAI's low detail, billed as the smallest resolution mode."""
    if "detail" not in fields or fields["detail"].WhichOneof("kind") == "null_value":
        return "auto"
    detail = fields["detail"].string_value if fields["detail"].WhichOneof("kind") == "string_value" else None
    if detail not in ("auto", "low", "high"):
        raise invalid_request(f"Invalid value: {detail!r}. Supported values are: 'auto', 'low', and 'high'.",
                              param=param, code="invalid_value")
    return detail


def _utf8_size(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogatepass"))


def _messages(req: router_pb2.CreateChatCompletionRequest) -> tuple[Message, ...]:
    if not req.messages:
        raise invalid_request("Invalid 'messages': empty array. Expected an array with minimum length 1.",
                              param="messages", code="empty_array")
    if len(req.messages) > MAX_MESSAGES:
        raise invalid_request(
            f"Invalid 'messages': array too long. Expected an array with maximum length {MAX_MESSAGES}, but got an "
            f"array with length {len(req.messages)} instead (limit: {MAX_MESSAGES} messages per request). Please "
            f"reduce the number of messages.", param="messages", code=CONTEXT_LENGTH_EXCEEDED)
    out, total, pending = [], 0, _NO_CALLS
    for i, m in enumerate(req.messages):
        role = m.role
        if role not in ROLES:
            raise invalid_request(
                f"Invalid value: '{role}'. Supported values are: 'system', 'developer', 'user', 'assistant', and "
                f"'tool'.", param=f"messages[{i}].role", code="invalid_value")
        if role != "assistant" and m.content.WhichOneof("kind") in (None, "null_value"):
            raise invalid_request(f"Missing required parameter: 'messages[{i}].content'.",
                                  param=f"messages[{i}].content", code="missing_required_parameter")
        text, images = _content(m.content, f"messages[{i}].content")
        for name in ("audio", "function_call"):
            if getattr(m, name).WhichOneof("kind") not in (None, "null_value"):
                raise invalid_request(f"Invalid parameter: 'messages[{i}].{name}' is not supported"
                                      f"{': no model here speaks' if name == 'audio' else '; use tool_calls'}.",
                                      param=f"messages[{i}].{name}", code="unsupported_parameter")
        for name in ("refusal", "reasoning_content"):
            if getattr(m, name) and role != "assistant":
                raise invalid_request(f"Invalid parameter: 'messages[{i}].{name}' is only allowed on messages with "
                                      f"role 'assistant'.", param=f"messages[{i}].{name}", code="invalid_value")
        if m.refusal and not text:
            text = m.refusal  # what the assistant said, then
        if images and role != "user":
            # Where templates place images (and where OpenAI takes them): a user's message.
            raise invalid_request(f"Invalid 'messages[{i}].content': image parts are accepted in user messages only.",
                                  param=f"messages[{i}].content", code="invalid_value")
        size = _utf8_size(text)
        calls, call_id = (), ""
        if role == "assistant":
            if m.tool_calls:
                calls = _tool_calls(m, i)
                size += sum(_utf8_size(c.name) + _utf8_size(c.arguments) for c in calls)
            pending = frozenset(c.id for c in calls) if calls else _NO_CALLS
        else:
            # A tool message answers a call of the assistant message before it (or of one more tool message back).
            call_id = _check_tool_fields(m, i, role, pending)
            if role != "tool":
                pending = _NO_CALLS
        if size > MAX_MESSAGE_BYTES:
            raise invalid_request(
                f"Invalid 'messages[{i}].content': string too long. Expected at most {MAX_MESSAGE_BYTES} bytes "
                f"(limit: 1 MiB per message), but got {size} bytes instead. Please reduce the length of the message.",
                param=f"messages[{i}].content", code=CONTEXT_LENGTH_EXCEEDED)
        total += size
        if total > MAX_PROMPT_BYTES:
            raise invalid_request(
                f"Invalid 'messages': the messages are longer than {MAX_PROMPT_BYTES} bytes (limit: 2 MiB of text per "
                f"request). Please reduce the length of the messages.", param="messages", code=CONTEXT_LENGTH_EXCEEDED)
        if calls or call_id or images:
            out.append(Message(role, text, bool(images), size, calls, call_id, images))
        else:
            out.append(Message(role, text, False, size))
    return tuple(out)


_NO_CALLS: frozenset[str] = frozenset()


def _check_tool_fields(m: router_pb2.ChatMessage, i: int, role: str, pending: frozenset[str]) -> str:
    """A non-assistant message's tool fields: a tool message's tool_call_id (required, naming a pending call)."""
    call_id = m.tool_call_id
    if role == "tool":
        if not call_id:
            raise invalid_request(f"Missing required parameter: 'messages[{i}].tool_call_id'.",
                                  param=f"messages[{i}].tool_call_id", code="missing_required_parameter")
        if call_id not in pending:
            raise invalid_request(f"Invalid parameter: messages with role 'tool' must be a response to a preceding "
                                  f"message with 'tool_calls' (no call '{call_id}').",
                                  param=f"messages[{i}].tool_call_id", code="invalid_value")
    elif call_id:
        raise invalid_request(f"Invalid parameter: 'messages[{i}].tool_call_id' is only allowed on messages with "
                              f"role 'tool'.", param=f"messages[{i}].tool_call_id", code="invalid_value")
    if m.tool_calls:
        raise invalid_request(f"Invalid parameter: 'messages[{i}].tool_calls' is only allowed on messages with "
                              f"role 'assistant'.", param=f"messages[{i}].tool_calls", code="invalid_value")
    return call_id


def _tool_calls(m: router_pb2.ChatMessage, i: int) -> tuple[ToolCall, ...]:
    """An assistant message's `tool_calls`: [{"id", "type": "function", "function": {"name", "arguments"}}]."""
    calls = []
    for j, call in enumerate(m.tool_calls):
        param = f"messages[{i}].tool_calls[{j}]"
        fields = call.fields
        _known_keys(fields, _TOOL_CALL_KEYS, param)
        ctype = fields["type"].string_value if "type" in fields else "function"
        if ctype != "function":
            raise invalid_request(f"Invalid value: '{ctype}'. Supported values are: 'function'.",
                                  param=f"{param}.type", code="invalid_value")
        function = fields["function"].struct_value.fields if "function" in fields and \
            fields["function"].WhichOneof("kind") == "struct_value" else None
        if "id" not in fields or fields["id"].WhichOneof("kind") != "string_value":
            raise invalid_request(f"Missing required parameter: '{param}.id'.", param=f"{param}.id",
                                  code="missing_required_parameter")
        if function is not None:
            _known_keys(function, _FUNCTION_CALL_KEYS, f"{param}.function")
        for key in ("name", "arguments"):
            if function is None or key not in function or function[key].WhichOneof("kind") != "string_value":
                raise invalid_request(f"Missing required parameter: '{param}.function.{key}' (a string).",
                                      param=f"{param}.function.{key}", code="missing_required_parameter")
        calls.append(ToolCall(fields["id"].string_value, function["name"].string_value,
                              function["arguments"].string_value))
    return tuple(calls)


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


def _max_tokens(req: router_pb2.CreateChatCompletionRequest) -> tuple[int | None, str]:
    """max_completion_tokens (OpenAI's current name) wins over the deprecated max_tokens; both are checked."""
    value, param = None, "max_tokens"
    for name in ("max_completion_tokens", "max_tokens"):
        if req.HasField(name):
            if getattr(req, name) < 1:
                raise invalid_request(f"Invalid '{name}': integer below minimum value. Expected a value >= 1, but got "
                                      f"{getattr(req, name)} instead.", param=name, code="integer_below_min_value")
            if value is None:
                value, param = getattr(req, name), name
    return value, param


# OpenAI fields no model here serves: a 400 naming the field whenever it is set (README "Chat parameters").
_UNSERVED = {
    "prediction": "Predicted outputs are not supported.",
    "audio": "Audio output is not supported: no model here speaks.",
    "web_search_options": "Web search is not supported.",
    "functions": "'functions' is deprecated and not supported: use 'tools'.",
    "function_call": "'function_call' is deprecated and not supported: use 'tool_choice'.",
    "verbosity": "'verbosity' is not supported by these models.",
}
SERVICE_TIERS = ("auto", "default")  # one tier is served; flex/priority/scale are refused


def _is_set(value: struct_pb2.Value) -> bool:
    return value.WhichOneof("kind") not in (None, "null_value")


def _check_unserved(req: router_pb2.CreateChatCompletionRequest) -> None:
    """Fields the router does not pass to the model: still checked against OpenAI's ranges and types, and refused
    when they ask for something not served."""
    for name, why in _UNSERVED.items():
        if req.HasField(name) and _is_set(getattr(req, name)):
            raise invalid_request(f"Invalid parameter '{name}': {why}", param=name, code="unsupported_parameter")
    if req.HasField("modalities") and _is_set(req.modalities):
        kinds = req.modalities.list_value.values if req.modalities.WhichOneof("kind") == "list_value" else None
        if kinds is None or any(v.string_value != "text" for v in kinds):
            raise invalid_request("Invalid 'modalities': only [\"text\"] is supported.", param="modalities",
                                  code="unsupported_value")
    if req.service_tier and req.service_tier not in SERVICE_TIERS:
        raise invalid_request(f"Invalid 'service_tier': '{req.service_tier}' is not offered. Supported values are: "
                              f"'auto' and 'default'.", param="service_tier", code="unsupported_value")
    if req.HasField("store") and req.store:
        # OpenAI keeps stored completions for its dashboard and evals; the platform keeps no completion text.
        raise invalid_request("Invalid 'store': completions are never stored by this service (store must be false).",
                              param="store", code="unsupported_value")
    if req.HasField("n") and not 1 <= req.n <= MAX_N:
        raise invalid_request(f"Invalid 'n': expected a value between 1 and {MAX_N}, but got {req.n} instead.",
                              param="n", code="invalid_value")
    if req.reasoning_effort and req.reasoning_effort not in REASONING_EFFORTS:
        raise invalid_request(f"Invalid value: '{req.reasoning_effort}'. Supported values are: 'none', 'minimal', "
                              f"'low', 'medium', 'high', 'xhigh', and 'max'.", param="reasoning_effort",
                              code="invalid_value")
    if req.HasField("top_logprobs") and not 0 <= req.top_logprobs <= MAX_TOP_LOGPROBS:
        raise invalid_request(f"Invalid 'top_logprobs': expected a value between 0 and {MAX_TOP_LOGPROBS}, but got "
                              f"{req.top_logprobs} instead.", param="top_logprobs", code="invalid_value")
    if req.top_logprobs and not req.logprobs:
        # OpenAI's rule: top_logprobs needs logprobs.
        raise invalid_request("Invalid value for 'top_logprobs': 'logprobs' must be set to true when "
                              "'top_logprobs' is used.", param="top_logprobs", code="invalid_value")
    if len(req.metadata.fields) > MAX_METADATA_PAIRS:
        raise invalid_request(f"Invalid 'metadata': too many keys. Expected at most {MAX_METADATA_PAIRS} key-value "
                              f"pairs, but got {len(req.metadata.fields)}.", param="metadata", code="invalid_value")
    for key, value in req.metadata.fields.items():
        if len(key) > MAX_METADATA_KEY or value.WhichOneof("kind") != "string_value" \
                or len(value.string_value) > MAX_METADATA_VALUE:
            raise invalid_request(f"Invalid 'metadata': keys are strings of at most {MAX_METADATA_KEY} characters, "
                                  f"values strings of at most {MAX_METADATA_VALUE}.", param="metadata",
                                  code="invalid_value")


def parse_chat_request(req: router_pb2.CreateChatCompletionRequest, *, stream: bool | None = None) -> ChatParams:
    """`stream` overrides the request's own flag (the typed RPCs decide it by which method was called)."""
    if not req.model:
        raise invalid_request("you must provide a model parameter", param="model", code="missing_required_parameter")
    messages = _messages(req)
    max_tokens, max_tokens_param = _max_tokens(req)
    _check_unserved(req)
    if req.HasField("top_k") and req.top_k < -1:
        raise invalid_request("Invalid 'top_k': expected -1 (disabled) or a positive integer.", param="top_k",
                              code="integer_below_min_value")
    temperature = _range(req, "temperature", 0.0, 2.0)
    top_p = _range(req, "top_p", 0.0, 1.0)
    if top_p == 0.0:
        # OpenAI's spec allows 0 (only the most likely token), vLLM requires top_p in (0, 1]: the same thing is
        # greedy decoding.
        temperature, top_p = 0.0, None
    # vLLM before 0.8 accepts -1 or >= 1 only; 0 means "no top-k" wherever it is accepted.
    top_k = req.top_k if req.HasField("top_k") and req.top_k not in (0, -1) else None
    wants_stream = req.stream if stream is None else stream
    tools = parse_tools(req)
    guided = parse_response_format(req.response_format, req.HasField("response_format"))
    if guided is not None and tools is not None and tools.choice == "auto":
        # One grammar per answer: a JSON-constrained answer cannot also choose to call a tool.
        raise invalid_request("Invalid 'response_format': a JSON response_format cannot be combined with "
                              "tool_choice 'auto' (the output is constrained to one or the other). Use tool_choice "
                              "'none', 'required' or a named function.", param="response_format",
                              code="unsupported_parameter")
    return ChatParams(
        model=req.model,
        messages=messages,
        stream=wants_stream,
        include_usage=include_usage(req, wants_stream),
        max_tokens=max_tokens,
        max_tokens_param=max_tokens_param,
        prompt_bytes=sum(m.size for m in messages),
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        presence_penalty=_range(req, "presence_penalty", -2.0, 2.0),
        frequency_penalty=_range(req, "frequency_penalty", -2.0, 2.0),
        seed=req.seed if req.HasField("seed") else None,
        stop=_stop(req.stop),
        user=req.user,
        wants_tools=len(req.tools) > 0,
        guided_decoding=guided,
        tools=tools,
        logprobs=req.logprobs,
        top_logprobs=req.top_logprobs,
        reasoning_effort=req.reasoning_effort,
        n=req.n if req.HasField("n") else 1,
        logit_bias=parse_logit_bias(req.logit_bias),
    )


def parse_logit_bias(bias: struct_pb2.Struct) -> dict[int, float] | None:
    """OpenAI's `logit_bias`: token ids (as JSON's string keys) -> a bias added to that token's logit, -100 (never
    sampled) to 100 (always, as good as). Served by models whose catalogue entry lists `logit_bias` (the pipeline
    checks that); a token id outside the model's vocabulary is the backend's 400."""
    if not bias.fields:
        return None
    if len(bias.fields) > MAX_LOGIT_BIAS:
        raise invalid_request(f"Invalid 'logit_bias': too many tokens. Expected at most {MAX_LOGIT_BIAS}, but got "
                              f"{len(bias.fields)}.", param="logit_bias", code="invalid_value")
    parsed = {}
    for token, value in bias.fields.items():
        # A token id in its one decimal form ("7", not "07": two spellings of one id would make the bias ambiguous).
        if not token.isascii() or not token.isdigit() or len(token) > 9 or token != str(int(token)) \
                or value.WhichOneof("kind") != "number_value" \
                or not -LOGIT_BIAS_RANGE <= value.number_value <= LOGIT_BIAS_RANGE:
            raise invalid_request("Invalid 'logit_bias': expected a map of token ids to numbers between -100 and "
                                  "100.", param="logit_bias", code="invalid_value")
        parsed[int(token)] = value.number_value
    return parsed


def context_exceeded(message: str) -> ApiError:
    return invalid_request(message, param="messages", code=CONTEXT_LENGTH_EXCEEDED)


def check_context(params: ChatParams, max_model_len: int, default_max_tokens: int) -> int:
    """The max_tokens to send, once the messages and max_tokens are known to fit the model's context as far as the
    router can tell without a tokenizer (see MAX_BYTES_PER_TOKEN). Without max_tokens: the model's default, capped to
    the room the messages certainly leave (the backend stops at the context, finish_reason `length`)."""
    if max_model_len <= 0:  # unknown context: the backend decides
        return params.max_tokens or default_max_tokens
    size = params.prompt_bytes
    if size > max_model_len * MAX_BYTES_PER_TOKEN:
        raise context_exceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, your messages are {size} bytes "
            f"long, more than the {max_model_len * MAX_BYTES_PER_TOKEN} bytes this service accepts for that context "
            f"(limit: {MAX_BYTES_PER_TOKEN} bytes per token). Please reduce the length of the messages.")
    at_least = -(-size // MAX_BYTES_PER_TOKEN)
    if params.max_tokens is None:
        return max(1, min(default_max_tokens, max_model_len - at_least))
    if params.max_tokens > max_model_len:
        raise invalid_request(
            f"{params.max_tokens_param} is too large: {params.max_tokens}. This model supports at most "
            f"{max_model_len} tokens (prompt and completion).", param=params.max_tokens_param, code="invalid_value")
    if at_least + params.max_tokens > max_model_len:
        raise context_exceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested at least "
            f"{at_least + params.max_tokens} tokens (at least {at_least} in the messages: {size} bytes, at most "
            f"{MAX_BYTES_PER_TOKEN} per token; {params.max_tokens} in the completion). Please reduce the length of the "
            f"messages or completion.")
    return params.max_tokens


def check_prompt_tokens(params: ChatParams, prompt_tokens: int, max_model_len: int) -> None:
    """The backend's exact count of the prompt's tokens (its first response): prompt plus the max_tokens the client
    asked for must fit the context, as OpenAI and vLLM's own server require."""
    if max_model_len <= 0:
        return
    completion = params.max_tokens or 1
    if prompt_tokens + completion > max_model_len:
        raise context_exceeded(
            f"This model's maximum context length is {max_model_len} tokens. However, you requested "
            f"{prompt_tokens + completion} tokens ({prompt_tokens} in the messages, {completion} in the completion). "
            f"Please reduce the length of the messages or completion.")
