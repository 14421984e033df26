"""`response_format` of a chat completion -> the backend's guided decoding, or a 400 naming `response_format`.

OpenAI's three types: `text` (free text, the default), `json_object` (any JSON object) and `json_schema` (output
matching `json_schema.schema`). The result is vLLM's GuidedDecodingParams as a dict (`{"json": schema}` or
`{"json_object": true}`), sent as `sampling_parameters.guided_decoding`: what Triton's vLLM backend turns into
GuidedDecodingParams (vLLM 0.6 .. 0.10; 0.11 renamed it `structured_outputs` with the same keys).

The schema is checked here against a clear subset of JSON Schema's structure (no `jsonschema` dependency): the
keywords that shape values must have the right types, recursively, within size and depth limits, so a malformed schema
is the client's 400 and never a backend failure. Keywords outside the subset are passed on (vLLM/xgrammar and
llama.cpp ignore the annotations they do not enforce).
"""

from __future__ import annotations

import json
import re

from google.protobuf import json_format, struct_pb2

from llmaas.common.errors import invalid_request

PARAM = "response_format"
NAME_PATTERN = re.compile(r"^[a-zA-Z0-9_-]{1,64}$")  # OpenAI's ResponseFormatJsonSchema.name
MAX_SCHEMA_BYTES = 64 * 1024  # a grammar is compiled from it per request: bounded
MAX_SCHEMA_DEPTH = 32
TYPES = {"object", "array", "string", "number", "integer", "boolean", "null"}
_SCHEMA_MAPS = ("properties", "$defs", "definitions", "patternProperties")
_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_ONE = ("items", "additionalProperties", "not", "contains", "propertyNames")
_NUMBERS = ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf")
_COUNTS = ("minItems", "maxItems", "minLength", "maxLength", "minProperties", "maxProperties")


def _bad(message: str, param: str = PARAM, code: str = "invalid_value"):
    return invalid_request(message, param=param, code=code)


def ints(value):
    """Struct numbers are doubles: 3.0 -> 3, so a schema's counts read as integers downstream (grammar converters)."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: ints(v) for k, v in value.items()}
    if isinstance(value, list):
        return [ints(v) for v in value]
    return value


def check_schema(schema, path: str = "schema", depth: int = 0, root: str = f"{PARAM}.json_schema") -> None:
    """Raises a 400 naming <root>.<path> if `schema` is not a structurally valid JSON Schema (root: where the schema
    is in the request, e.g. a tool's `tools[0].function`)."""
    where = f"{root}.{path}"
    if isinstance(schema, bool):
        return
    if not isinstance(schema, dict):
        raise _bad(f"Invalid schema at '{where}': expected an object or a boolean.", where)
    if depth > MAX_SCHEMA_DEPTH:
        raise _bad(f"Invalid schema at '{where}': nested deeper than {MAX_SCHEMA_DEPTH} levels.", where)
    kind = schema.get("type")
    if kind is not None:
        kinds = kind if isinstance(kind, list) else [kind]
        if not kinds or any(not isinstance(k, str) or k not in TYPES for k in kinds):
            raise _bad(f"Invalid schema at '{where}.type': {json.dumps(kind)} is not one of {sorted(TYPES)}.",
                       f"{where}.type")
    for key in _SCHEMA_MAPS:
        if key in schema:
            if not isinstance(schema[key], dict):
                raise _bad(f"Invalid schema at '{where}.{key}': expected an object of schemas.", f"{where}.{key}")
            for name, sub in schema[key].items():
                check_schema(sub, f"{path}.{key}.{name}", depth + 1, root)
    for key in _SCHEMA_LISTS:
        if key in schema:
            if not isinstance(schema[key], list) or not schema[key]:
                raise _bad(f"Invalid schema at '{where}.{key}': expected a non-empty array of schemas.",
                           f"{where}.{key}")
            for i, sub in enumerate(schema[key]):
                check_schema(sub, f"{path}.{key}[{i}]", depth + 1, root)
    for key in _SCHEMA_ONE:
        if key in schema:
            check_schema(schema[key], f"{path}.{key}", depth + 1, root)
    required = schema.get("required")
    if required is not None and (not isinstance(required, list) or not all(isinstance(r, str) for r in required)
                                 or len(set(required)) != len(required)):
        raise _bad(f"Invalid schema at '{where}.required': expected an array of unique strings.", f"{where}.required")
    if "enum" in schema and (not isinstance(schema["enum"], list) or not schema["enum"]):
        raise _bad(f"Invalid schema at '{where}.enum': expected a non-empty array.", f"{where}.enum")
    for key in _NUMBERS:
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], (int, float))):
            raise _bad(f"Invalid schema at '{where}.{key}': expected a number.", f"{where}.{key}")
    for key in _COUNTS:
        if key in schema and (isinstance(schema[key], bool) or not isinstance(schema[key], int) or schema[key] < 0):
            raise _bad(f"Invalid schema at '{where}.{key}': expected a non-negative integer.", f"{where}.{key}")
    if "pattern" in schema:
        if not isinstance(schema["pattern"], str):
            raise _bad(f"Invalid schema at '{where}.pattern': expected a string.", f"{where}.pattern")
        try:
            re.compile(schema["pattern"])
        except re.error as e:
            raise _bad(f"Invalid schema at '{where}.pattern': not a valid regular expression ({e}).",
                       f"{where}.pattern") from None


def check_strict(schema, subject: str, param: str) -> None:
    """OpenAI's rules for a strict schema (Structured Outputs), with its wording: the root is an object; every
    object lists every property in `required` and sets `additionalProperties: false`, so that the answer has exactly
    the declared fields. `subject`: "response_format 'name'" or "function 'name'"; the 400 names `param`."""
    def bad(context: tuple[str, ...], rule: str):
        return _bad(f"Invalid schema for {subject}: In context={context!r}, {rule}", param)

    if not isinstance(schema, dict) or schema.get("type") != "object" or "anyOf" in schema:
        raise bad((), "schema must be a JSON Schema of 'type: \"object\"', got "
                      f"'type: {json.dumps(schema.get('type') if isinstance(schema, dict) else None)}'.")

    def walk(node, context: tuple[str, ...]) -> None:
        if not isinstance(node, dict):
            return
        kinds = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
        if "object" in kinds or "properties" in node:
            if node.get("additionalProperties") is not False:
                raise bad(context, "'additionalProperties' is required to be supplied and to be false.")
            properties = node.get("properties") or {}
            missing = [name for name in properties if name not in (node.get("required") or [])]
            if missing:
                raise bad(context, "'required' is required to be supplied and to be an array including every key "
                                   f"in properties. Missing '{missing[0]}'.")
            for name, sub in properties.items():
                walk(sub, (*context, "properties", name))
        for key in ("$defs", "definitions"):
            for name, sub in (node.get(key) or {}).items():
                walk(sub, (*context, key, name))
        for key in ("anyOf", "prefixItems"):
            for i, sub in enumerate(node.get(key) or []):
                walk(sub, (*context, key, str(i)))
        if isinstance(node.get("items"), dict):
            walk(node["items"], (*context, "items"))

    walk(schema, ())


def parse_response_format(value: struct_pb2.Struct, present: bool) -> dict | None:
    """vLLM guided decoding for the request's response_format; None for free text."""
    if not present:
        return None
    fmt = json_format.MessageToDict(value)
    kind = fmt.get("type")
    if kind is None:
        raise _bad("Missing required parameter: 'response_format.type'.", f"{PARAM}.type",
                   "missing_required_parameter")
    if kind == "text":
        return None
    if kind == "json_object":
        return {"json_object": True}
    if kind != "json_schema":
        raise _bad(f"Invalid value: {json.dumps(kind)}. Supported values are: 'text', 'json_object', and "
                   f"'json_schema'.", f"{PARAM}.type")
    spec = fmt.get("json_schema")
    if not isinstance(spec, dict):
        raise _bad("Missing required parameter: 'response_format.json_schema'.", f"{PARAM}.json_schema",
                   "missing_required_parameter")
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_PATTERN.match(name):
        raise _bad(f"Invalid 'response_format.json_schema.name': {json.dumps(name)} does not match "
                   f"'^[a-zA-Z0-9_-]{{1,64}}$'.", f"{PARAM}.json_schema.name")
    if "strict" in spec and spec["strict"] is not None and not isinstance(spec["strict"], bool):
        raise _bad("Invalid type for 'response_format.json_schema.strict': expected a boolean.",
                   f"{PARAM}.json_schema.strict", "invalid_type")
    if "schema" not in spec:
        # OpenAI's spec makes it optional, but without it there is nothing to enforce: refused, never ignored.
        raise _bad("Missing required parameter: 'response_format.json_schema.schema'.", f"{PARAM}.json_schema.schema",
                   "missing_required_parameter")
    schema = ints(spec["schema"])
    if len(json.dumps(schema)) > MAX_SCHEMA_BYTES:
        raise _bad(f"Invalid 'response_format.json_schema.schema': longer than {MAX_SCHEMA_BYTES} bytes.",
                   f"{PARAM}.json_schema.schema")
    check_schema(schema)
    if spec.get("strict") is True:
        check_strict(schema, f"response_format '{name}'", PARAM)
    # The output always follows the schema (strict or not): constrained decoding is the only mode served.
    return {"json": schema}
