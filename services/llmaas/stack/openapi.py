"""Finishes the public OpenAPI description protos/generate.sh writes (gateway/openapi.yaml), as OpenAPI 3.1.

grpc-gateway's protoc-gen-openapiv2 (stable; its OpenAPI 3 twin is alpha) describes the methods that have a
google.api.http binding (the public ones), with proto field names and 64-bit integers as strings, as Envoy's transcoder
prints them. This module says what it cannot know, so that the description is what the wire carries:
- every error is OpenAI's {"error": {"message", "type", "param", "code"}} (not google.rpc.Status);
- POST /v1/chat/completions is an HttpBody stream on the gRPC side, but on the wire a chat.completion object
  (application/json) or, when `stream` is true, Server-Sent Events whose data is a chat.completion.chunk object and
  finally `[DONE]`: two media types for one status, which needs OpenAPI 3 (hence the conversion from Swagger 2.0);
- POST /v1/embeddings is an HttpBody the router writes: on the wire, the typed CreateEmbeddingResponse;
- POST /v1/audio/transcriptions and /translations are HttpBody both ways: on the wire a multipart/form-data upload
  (OpenAI's fields) answered with JSON or, as `response_format` asks, plain text (text, SRT, WebVTT);
- the Files and Batch API (llmaas.router.batch) is HttpBody on the gRPC side: on the wire a multipart upload and a
  JSON body in, OpenAI's file and batch objects out, a file's bytes from /content (FILES_AND_BATCHES);
- the API key (or admin token) is a bearer token; GET /v1/lifecycle and GET /v1/status need none;
- integers have their proto type's range (the plugin writes uint32 as "int64", with no bounds) and 64-bit ones, JSON
  strings, only digits: read from the descriptor set (gateway/llmaas.pb), so that a fuzzer sends what the wire can
  carry, up to its limits.

Usage: python -m llmaas.stack.openapi BOUND UNBOUND DESCRIPTORS OUT, where BOUND is the plugin's merged output for the
bound methods, UNBOUND the same with generate_unbound_methods (only read for the typed chat responses' definitions) and
DESCRIPTORS the protos' descriptor set.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml
from google.protobuf import descriptor_pb2

from llmaas.router.audio_upload import GRANULARITIES, RESPONSE_FORMATS, SUPPORTED_FORMATS

FieldType = descriptor_pb2.FieldDescriptorProto

CHAT_PATH = "/v1/chat/completions"
CHAT_RESPONSE = "llmaas.router.v1.CreateChatCompletionResponse"
CHAT_CHUNK = "llmaas.router.v1.StreamChatCompletionResponse"
# POST /v1/embeddings: an HttpBody the router writes (llmaas.router.embeddings), in the typed response's shape.
EMBEDDINGS_PATH = "/v1/embeddings"
EMBEDDINGS_RESPONSE = "llmaas.router.v1.CreateEmbeddingResponse"
AUDIO_PATHS = ("/v1/audio/transcriptions", "/v1/audio/translations")
MULTIPART = "multipart/form-data"
TEXT = "text/plain"
PUBLIC_PATHS = {"/v1/lifecycle", "/v1/status"}  # no API key asked (gateway/envoy.yaml.j2)
ERROR = "Error"
JSON = "application/json"
SSE = "text/event-stream"

ERROR_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's error object: every non-2xx response of the API carries one.",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["message", "type", "param", "code"],
            "properties": {
                "message": {"type": "string", "minLength": 1},
                "type": {"type": "string", "minLength": 1},
                "param": {"type": ["string", "null"]},
                "code": {"type": ["string", "null"]},
            },
        },
    },
}



def _audio_form(translation: bool) -> dict[str, Any]:
    """OpenAI's upload form (llmaas.router.audio_upload parses it; translations take no `language`)."""
    properties: dict[str, Any] = {
        "file": {"type": "string", "contentMediaType": "application/octet-stream",
                 "description": f"The audio: {', '.join(SUPPORTED_FORMATS)}."},
        "model": {"type": "string", "minLength": 1},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": list(RESPONSE_FORMATS), "default": "json"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
    }
    if not translation:
        properties["language"] = {"type": "string", "description": "ISO-639-1, e.g. `en`."}
        properties["timestamp_granularities[]"] = {"type": "array", "items": {"type": "string",
                                                                            "enum": list(GRANULARITIES)}}
    return {"type": "object", "required": ["file", "model"], "properties": properties}


# What a transcription answers: `text` always; verbose_json adds the language, duration, segments and words.
AUDIO_RESULT: dict[str, Any] = {
    "type": "object",
    "required": ["text"],
    "properties": {"text": {"type": "string"}, "language": {"type": "string"}, "duration": {"type": "number"},
                   "segments": {"type": "array", "items": {"type": "object"}},
                   "words": {"type": "array", "items": {"type": "object"}},
                   "usage": {"type": "object"}},
}


def _audio_operation(operation: dict[str, Any], translation: bool) -> dict[str, Any]:
    operation = dict(operation)
    operation["requestBody"] = {"required": True, "content": {MULTIPART: {"schema": _audio_form(translation)}}}
    operation["responses"] = {
        **operation["responses"],
        "200": {"description": "json and verbose_json: the transcription object; text, srt and vtt: plain text.",
                "content": {JSON: {"schema": AUDIO_RESULT}, TEXT: {"schema": {"type": "string"}}}},
    }
    return operation


def _object(properties: dict[str, Any], *, optional: tuple[str, ...] = ()) -> dict[str, Any]:
    return {"type": "object", "required": [k for k in properties if k not in optional], "properties": properties}


_INT = {"type": "integer"}
_STR = {"type": "string"}
_INT_OR_NULL = {"type": ["integer", "null"]}
_STR_OR_NULL = {"type": ["string", "null"]}
FILE_OBJECT = _object({
    "id": _STR, "object": {"const": "file"}, "bytes": _INT, "created_at": _INT, "expires_at": _INT_OR_NULL,
    "filename": _STR, "purpose": _STR, "status": _STR, "status_details": _STR_OR_NULL})
BATCH_OBJECT = _object({
    "id": _STR, "object": {"const": "batch"}, "endpoint": _STR, "model": _STR_OR_NULL,
    "errors": {"anyOf": [{"type": "null"}, _object({"object": _STR, "data": {"type": "array", "items": _object({
        "code": _STR, "message": _STR, "param": _STR_OR_NULL, "line": _INT_OR_NULL})}})]},
    "input_file_id": _STR, "completion_window": _STR,
    "status": {"enum": ["validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling",
                        "cancelled"]},
    "output_file_id": _STR_OR_NULL, "error_file_id": _STR_OR_NULL, "created_at": _INT,
    **{f"{stage}_at": _INT_OR_NULL for stage in ("in_progress", "expires", "finalizing", "completed", "failed",
                                                 "expired", "cancelling", "cancelled")},
    "request_counts": _object({"total": _INT, "completed": _INT, "failed": _INT}),
    "usage": _object({"input_tokens": _INT, "input_tokens_details": _object({"cached_tokens": _INT}),
                      "output_tokens": _INT, "output_tokens_details": _object({"reasoning_tokens": _INT}),
                      "total_tokens": _INT}),
    "metadata": {"type": ["object", "null"], "additionalProperties": _STR}})


def _list_of(item: dict[str, Any], ids_required: bool) -> dict[str, Any]:
    return _object({"object": {"const": "list"}, "data": {"type": "array", "items": item}, "first_id": _STR,
                    "last_id": _STR, "has_more": {"type": "boolean"}},
                   optional=() if ids_required else ("first_id", "last_id"))


FILE_UPLOAD = _object({
    "file": {"type": "string", "contentMediaType": "application/octet-stream",
             "description": "The JSONL file: one request per line, each {custom_id, method, url, body}."},
    "purpose": {"enum": ["batch"]},
    "expires_after[anchor]": {"enum": ["created_at"]},
    "expires_after[seconds]": {"type": "integer", "minimum": 3600},
}, optional=("expires_after[anchor]", "expires_after[seconds]"))
BATCH_REQUEST = {**_object({
    "input_file_id": _STR, "endpoint": {"enum": ["/v1/chat/completions", "/v1/completions", "/v1/embeddings"]},
    "completion_window": {"enum": ["24h"]},
    "metadata": {"type": ["object", "null"], "maxProperties": 16, "additionalProperties": {"type": "string"}},
}, optional=("metadata",)), "additionalProperties": False}
# (path, method): (request body media type and schema or None, 200 response media type and schema).
FILES_AND_BATCHES: dict[tuple[str, str], tuple[tuple[str, dict] | None, tuple[str, dict]]] = {
    ("/v1/files", "post"): ((MULTIPART, FILE_UPLOAD), (JSON, FILE_OBJECT)),
    ("/v1/files", "get"): (None, (JSON, _list_of(FILE_OBJECT, ids_required=True))),
    ("/v1/files/{file_id}", "get"): (None, (JSON, FILE_OBJECT)),
    ("/v1/files/{file_id}", "delete"): (None, (JSON, _object({"id": _STR, "object": {"const": "file"},
                                                              "deleted": {"type": "boolean"}}))),
    ("/v1/files/{file_id}/content", "get"): (None, ("application/octet-stream", {"type": "string"})),
    ("/v1/batches", "post"): ((JSON, BATCH_REQUEST), (JSON, BATCH_OBJECT)),
    ("/v1/batches", "get"): (None, (JSON, _list_of(BATCH_OBJECT, ids_required=False))),
    ("/v1/batches/{batch_id}", "get"): (None, (JSON, BATCH_OBJECT)),
    ("/v1/batches/{batch_id}/cancel", "post"): (None, (JSON, BATCH_OBJECT)),
}


def _files_and_batches(paths: dict[str, Any]) -> None:
    for (path, method), (request, response) in FILES_AND_BATCHES.items():
        if method not in paths.get(path, {}):
            continue
        operation = paths[path][method]
        if request is not None:
            operation["requestBody"] = {"required": True, "content": {request[0]: {"schema": request[1]}}}
        elif "requestBody" in operation:
            del operation["requestBody"]
        operation["responses"]["200"] = {"description": "OpenAI's object.",
                                         "content": {response[0]: {"schema": response[1]}}}


# One Server-Sent Event of a streamed chat completion (OpenAPI before 3.2: the schema of a text/event-stream
# describes each event): a chunk, an error once the status is sent (llmaas.router.openai_json.sse_error), `[DONE]`.
CHUNK_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {
        "data": {"anyOf": [
            {"const": "[DONE]"},
            *({"type": "string", "contentMediaType": JSON, "contentSchema": {"$ref": f"#/components/schemas/{name}"}}
              for name in (CHAT_CHUNK, ERROR)),
        ]},
    },
}
# Fields the router writes as JSON null where their proto type has no null (llmaas.router.openai_json writes OpenAI's
# shape itself into the HttpBody): {definition: fields}. tests/unit/test_openapi_description.py checks the router's
# real output against the description, so this cannot drift unnoticed.
WIRE_NULLS = {
    CHAT_CHUNK: ("usage",),  # null on every chunk but the usage one
    "llmaas.router.v1.ChatCompletionChunkChoice": ("finish_reason", "logprobs"),  # null until the last chunk
    "llmaas.router.v1.ChatCompletionChoice": ("logprobs",),  # null unless asked for
    # content null when the answer is tool calls, reasoning_content when a reasoning model's answer has no reasoning
    "llmaas.router.v1.AssistantMessage": ("content", "reasoning_content"),
}

# POST /v1/completions: the router writes OpenAI's text_completion object (llmaas.router.completions), the same
# object per event when streamed.
COMPLETIONS_PATH = "/v1/completions"
_USAGE = {"type": "object", "required": ["prompt_tokens", "completion_tokens", "total_tokens"],
          "properties": {k: {"type": "integer", "minimum": 0}
                         for k in ("prompt_tokens", "completion_tokens", "total_tokens")}}
TEXT_COMPLETION: dict[str, Any] = {
    "type": "object",
    "description": "OpenAI's text_completion object.",
    "required": ["id", "object", "created", "model", "choices"],
    "properties": {
        "id": {"type": "string"}, "object": {"const": "text_completion"}, "created": {"type": "integer"},
        "model": {"type": "string"}, "system_fingerprint": {"type": "string"},
        "choices": {"type": "array", "items": {
            "type": "object", "required": ["text", "index", "logprobs", "finish_reason"],
            "properties": {
                "text": {"type": "string"}, "index": {"type": "integer"},
                "finish_reason": {"type": ["string", "null"]},
                "logprobs": {"anyOf": [{"type": "null"}, {"type": "object", "properties": {
                    "tokens": {"type": "array", "items": {"type": "string"}},
                    "token_logprobs": {"type": "array", "items": {"type": "number"}},
                    "top_logprobs": {"type": "array", "items": {"type": "object",
                                                                "additionalProperties": {"type": "number"}}},
                    "text_offset": {"type": "array", "items": {"type": "integer"}}}}]}}}},
        "usage": {"anyOf": [{"type": "null"}, _USAGE]},
    },
}
TEXT_COMPLETION_EVENT: dict[str, Any] = {
    "type": "object",
    "required": ["data"],
    "properties": {"data": {"anyOf": [
        {"const": "[DONE]"},
        {"type": "string", "contentMediaType": JSON, "contentSchema": {"$ref": "#/components/schemas/TextCompletion"}},
        {"type": "string", "contentMediaType": JSON, "contentSchema": {"$ref": f"#/components/schemas/{ERROR}"}},
    ]}},
}


_INT32 = {"minimum": -2**31, "maximum": 2**31 - 1}
_UINT32 = {"minimum": 0, "maximum": 2**32 - 1}
# What a field of each integer type may be on the wire: 64-bit integers are JSON strings of digits.
INTEGER_RANGES: dict[int, dict[str, Any]] = {
    FieldType.TYPE_INT32: _INT32, FieldType.TYPE_SINT32: _INT32, FieldType.TYPE_SFIXED32: _INT32,
    FieldType.TYPE_UINT32: _UINT32, FieldType.TYPE_FIXED32: _UINT32,
    **dict.fromkeys((FieldType.TYPE_INT64, FieldType.TYPE_SINT64, FieldType.TYPE_SFIXED64), {"pattern": "^-?[0-9]+$"}),
    **dict.fromkeys((FieldType.TYPE_UINT64, FieldType.TYPE_FIXED64), {"pattern": "^[0-9]+$"}),
}


class Protos:
    """The integer fields of the protos' messages, and the request message of each method."""

    def __init__(self, descriptor_set: bytes) -> None:
        files = descriptor_pb2.FileDescriptorSet.FromString(descriptor_set).file
        self.integers: dict[str, dict[str, int]] = {}
        self.inputs: dict[str, str] = {}
        for file in files:
            for message in file.message_type:
                self._add(f"{file.package}.{message.name}", message)
            for service in file.service:
                for method in service.method:
                    self.inputs[f"{file.package}.{service.name}.{method.name}"] = method.input_type.lstrip(".")

    def _add(self, name: str, message: descriptor_pb2.DescriptorProto) -> None:
        self.integers[name] = {f.name: f.type for f in message.field if f.type in INTEGER_RANGES}
        for nested in message.nested_type:
            self._add(f"{name}.{nested.name}", nested)

    def fields(self, definition: str) -> dict[str, int]:
        """Integer fields of a definition: a message, or the plugin's `<package>.<Service>.<Method>Body` (the request
        message without its path parameters)."""
        if definition in self.integers:
            return self.integers[definition]
        method = definition.removesuffix("Body")
        return self.integers.get(self.inputs.get(method, ""), {}) if method != definition else {}


def _ranged(schema: dict[str, Any], field_type: int) -> dict[str, Any]:
    if schema.get("type") == "array":
        return {**schema, "items": _ranged(schema["items"], field_type)}
    return {**schema, **INTEGER_RANGES[field_type]}


def _with_integer_ranges(definitions: dict[str, Any], protos: Protos) -> dict[str, Any]:
    out = {}
    for name, definition in definitions.items():
        fields = protos.fields(name)
        properties = definition.get("properties", {})
        out[name] = {**definition, "properties": {
            key: _ranged(value, fields[key]) if key in fields else value for key, value in properties.items()
        }} if fields.keys() & properties.keys() else definition
    return out


def _nullable(schema: dict[str, Any]) -> dict[str, Any]:
    if "$ref" in schema:
        return {"anyOf": [schema, {"type": "null"}]}
    return {**schema, "type": [schema["type"], "null"]}


def _refs(node: Any) -> set[str]:
    """Names of the definitions `node` refers to directly (Swagger 2.0 or OpenAPI 3 references)."""
    if isinstance(node, dict):
        ref = node.get("$ref")
        found = {ref.rsplit("/", 1)[1]} if isinstance(ref, str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*map(_refs, node)) if node else set()
    return set()


def _closure(names: set[str], definitions: dict[str, Any]) -> set[str]:
    """`names` and every definition they refer to, transitively."""
    seen: set[str] = set()
    todo = list(names)
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo.extend(_refs(definitions[name]) - seen)
    return seen


def _schema(node: Any) -> Any:
    """A Swagger 2.0 schema as OpenAPI 3.1's (JSON Schema 2020-12): references moved to components."""
    if isinstance(node, dict):
        out = {key: _schema(value) for key, value in node.items()}
        if isinstance(out.get("$ref"), str):
            out["$ref"] = out["$ref"].replace("#/definitions/", "#/components/schemas/")
        return out
    if isinstance(node, list):
        return [_schema(value) for value in node]
    return node


def _parameter(parameter: dict[str, Any]) -> dict[str, Any]:
    """A path or query parameter: its type moves under `schema`; a repeated one is form-exploded (the default)."""
    schema_keys = ("type", "format", "items", "pattern", "enum", "default", "minimum", "maximum")
    out = {key: value for key, value in parameter.items() if key not in schema_keys and key != "collectionFormat"}
    out["schema"] = _schema({key: parameter[key] for key in schema_keys if key in parameter})
    return out


def _operation(operation: dict[str, Any], produces: list[str], public: bool, fields: dict[str, int]) -> dict[str, Any]:
    """fields: the integer fields of the operation's request message (its path and query parameters' types)."""
    out = {key: value for key, value in operation.items() if key not in ("parameters", "responses", "produces")}
    parameters = [{**p, **INTEGER_RANGES[fields[p["name"]]]} if p["name"] in fields and p["in"] != "body" else p
                  for p in operation.get("parameters", [])]
    if plain := [_parameter(p) for p in parameters if p["in"] != "body"]:
        out["parameters"] = plain
    for body in (p for p in parameters if p["in"] == "body"):
        out["requestBody"] = {"required": True, "content": {JSON: {"schema": _schema(body["schema"])}}}
        if "description" in body:
            out["requestBody"]["description"] = body["description"]
    out["responses"] = {
        status: {"description": response["description"],
                 "content": {media: {"schema": _schema(response["schema"])} for media in produces}}
        for status, response in operation["responses"].items()
    }
    out["responses"]["default"] = {"description": "An error, in OpenAI's shape.",
                                   "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{ERROR}"}}}}
    if public:
        out["security"] = []
    return out


def _method(operation: dict[str, Any], protos: Protos) -> str:
    """The full name of an operation's method: its operationId is `<Service>_<Method>` (unique across packages)."""
    service_method = operation["operationId"].replace("_", ".", 1)
    return next(name for name in protos.inputs if name.endswith("." + service_method))


def finish(bound: dict[str, Any], unbound: dict[str, Any], protos: Protos) -> dict[str, Any]:
    """The OpenAPI 3.1 description of the wire, from the plugin's two Swagger 2.0 outputs and the descriptors."""
    produces = bound.get("produces", [JSON])
    paths = {
        path: {method: _operation(operation, operation.get("produces", produces), path in PUBLIC_PATHS,
                                  protos.integers[protos.inputs[_method(operation, protos)]])
               for method, operation in operations.items()}
        for path, operations in bound["paths"].items()
    }
    chat = paths[CHAT_PATH]["post"]["responses"]
    chat["200"] = {
        "description": "A chat.completion object; with `stream` true, Server-Sent Events whose data is a "
                       "chat.completion.chunk object, the last one `[DONE]`.",
        "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{CHAT_RESPONSE}"}},
                    SSE: {"schema": CHUNK_EVENT}},
    }
    if EMBEDDINGS_PATH in paths:
        paths[EMBEDDINGS_PATH]["post"]["responses"]["200"] = {
            "description": "OpenAI's embedding list (each `embedding` a list of numbers, or a base64 string of "
                           "little-endian float32 with `encoding_format` base64).",
            "content": {JSON: {"schema": {"$ref": f"#/components/schemas/{EMBEDDINGS_RESPONSE}"}}},
        }
    if COMPLETIONS_PATH in paths:
        paths[COMPLETIONS_PATH]["post"]["responses"]["200"] = {
            "description": "A text_completion object; with `stream` true, Server-Sent Events whose data is a "
                           "text_completion object, the last one `[DONE]`.",
            "content": {JSON: {"schema": {"$ref": "#/components/schemas/TextCompletion"}},
                        SSE: {"schema": TEXT_COMPLETION_EVENT}},
        }
    for path in AUDIO_PATHS:
        if path in paths:
            paths[path]["post"] = _audio_operation(paths[path]["post"], translation=path.endswith("translations"))
    _files_and_batches(paths)
    definitions = dict(bound["definitions"])
    typed = {CHAT_RESPONSE, CHAT_CHUNK} | ({EMBEDDINGS_RESPONSE} if EMBEDDINGS_PATH in paths else set())
    for name in _closure(typed, unbound["definitions"]):
        if name in definitions and definitions[name] != unbound["definitions"][name]:
            raise ValueError(f"{name} differs between the bound and unbound descriptions")
        definitions[name] = unbound["definitions"][name]
    for name, fields in WIRE_NULLS.items():
        properties = definitions[name]["properties"]
        definitions[name] = {**definitions[name],
                             "properties": {**properties, **{f: _nullable(properties[f]) for f in fields}}}
    definitions = _with_integer_ranges(definitions, protos)
    definitions[ERROR] = ERROR_SCHEMA
    definitions["TextCompletion"] = TEXT_COMPLETION
    # Only what the paths use (the plugin also keeps HttpBody, Any, NullValue), sorted: a stable file.
    used = _closure(_refs(paths), definitions)
    used_tags = {tag for operations in paths.values() for operation in operations.values()
                 for tag in operation.get("tags", [])}
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "llmaas public API",
            "version": "v1",
            "description": "OpenAI's REST API (/v1) and the admin API (/admin/v1), generated from the protos' "
                           "google.api.http annotations by protos/generate.sh. Do not edit.",
        },
        # The plugin names every service; a service with no public method (an internal one) has no place here.
        "tags": [tag for tag in bound.get("tags", []) if tag["name"] in used_tags],
        "security": [{"bearer": []}],
        "paths": paths,
        "components": {
            "schemas": {name: _schema(definitions[name]) for name in sorted(used)},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "The API key; on /admin/v1, the platform admin token or a tenant admin "
                                          "key."},
            },
        },
    }


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the protos' comments) as literal blocks, as the plugin writes them."""


_Dumper.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def main(argv: list[str]) -> None:
    bound, unbound, descriptors, out = map(Path, argv)
    spec = finish(yaml.safe_load(bound.read_text()), yaml.safe_load(unbound.read_text()),
                  Protos(descriptors.read_bytes()))
    text = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    out.write_text("# Generated by protos/generate.sh from the protos (protoc-gen-openapiv2 and llmaas.stack.openapi)."
                   " Do not edit.\n" + text)


if __name__ == "__main__":
    main(sys.argv[1:])
