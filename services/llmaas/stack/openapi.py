"""Finishes the public OpenAPI description protos/generate.sh writes (gateway/openapi.yaml).

grpc-gateway's protoc-gen-openapiv2 describes the methods that have a google.api.http binding (the public ones), with
proto field names and 64-bit integers as strings, as Envoy's transcoder prints them. What it cannot know, this module
says, so that the description is what the wire carries:
- every error is OpenAI's {"error": {"message", "type", "param", "code"}} (not google.rpc.Status);
- POST /v1/chat/completions is an HttpBody stream on the gRPC side, but on the wire a chat.completion object
  (application/json) or Server-Sent Events of chat.completion.chunk objects when `stream` is true;
- the API key (or admin token) is a bearer token; GET /v1/lifecycle needs none.

Usage: python -m llmaas.stack.openapi BOUND UNBOUND OUT, where BOUND is the plugin's merged output for the bound
methods and UNBOUND the same with generate_unbound_methods (only read for the typed chat response's definitions).
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path
from typing import Any

import yaml

CHAT_PATH = "/v1/chat/completions"
CHAT_RESPONSE = "llmaas.router.v1.CreateChatCompletionResponse"
PUBLIC_PATHS = {"/v1/lifecycle"}  # no API key asked (gateway/envoy.yaml.j2)
ERROR = "Error"

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
                "param": {"type": "string", "x-nullable": True},
                "code": {"type": "string", "x-nullable": True},
            },
        },
    },
}


def _refs(node: Any) -> set[str]:
    """Names of the definitions `node` refers to directly."""
    if isinstance(node, dict):
        found = {node["$ref"].removeprefix("#/definitions/")} if isinstance(node.get("$ref"), str) else set()
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


def finish(bound: dict[str, Any], unbound: dict[str, Any]) -> dict[str, Any]:
    spec = copy.deepcopy(bound)
    spec["info"] = {
        "title": "llmaas public API",
        "version": "v1",
        "description": "OpenAI's REST API (/v1) and the admin API (/admin/v1), generated from the protos' "
                       "google.api.http annotations by protos/generate.sh. Do not edit.",
    }
    spec["securityDefinitions"] = {
        "bearer": {"type": "apiKey", "in": "header", "name": "Authorization",
                   "description": "`Bearer <API key>`; on /admin/v1, the platform admin token or a tenant admin key."},
    }
    spec["security"] = [{"bearer": []}]
    definitions = spec["definitions"]
    definitions[ERROR] = ERROR_SCHEMA
    for path, operations in spec["paths"].items():
        for operation in operations.values():
            responses = operation["responses"]
            responses["default"] = {"description": "An error, in OpenAI's shape.",
                                    "schema": {"$ref": f"#/definitions/{ERROR}"}}
            if path in PUBLIC_PATHS:
                operation["security"] = []
    chat = spec["paths"][CHAT_PATH]["post"]
    chat["produces"] = ["application/json", "text/event-stream"]
    chat["responses"]["200"] = {
        "description": "A chat.completion object; with `stream` true, Server-Sent Events of chat.completion.chunk "
                       "objects ending in `data: [DONE]`.",
        "schema": {"$ref": f"#/definitions/{CHAT_RESPONSE}"},
    }
    for name in _closure({CHAT_RESPONSE}, unbound["definitions"]):
        if name in definitions and definitions[name] != unbound["definitions"][name]:
            raise ValueError(f"{name} differs between the bound and unbound descriptions")
        definitions[name] = unbound["definitions"][name]
    # Only what the paths use (the plugin also keeps HttpBody, Any, NullValue), sorted: a stable file.
    used = _closure(_refs(spec["paths"]), definitions)
    spec["definitions"] = {name: definitions[name] for name in sorted(used)}
    return spec


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the protos' comments) as literal blocks, as the plugin writes them."""


_Dumper.add_representer(str, lambda dumper, s: dumper.represent_scalar(
    "tag:yaml.org,2002:str", s, style="|" if "\n" in s else None))


def main(argv: list[str]) -> None:
    bound, unbound, out = map(Path, argv)
    spec = finish(yaml.safe_load(bound.read_text()), yaml.safe_load(unbound.read_text()))
    text = yaml.dump(spec, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)
    out.write_text("# Generated by protos/generate.sh from the protos (protoc-gen-openapiv2 and llmaas.stack.openapi)."
                   " Do not edit.\n" + text)


if __name__ == "__main__":
    main(sys.argv[1:])
