"""Unknown top-level JSON fields are a 400, as OpenAI answers them ("Unrecognized request argument supplied"), not
silently dropped: Envoy's transcoder drops a JSON field its message does not have, so the edge lists the body's
top-level keys in KEYS_HEADER (gateway/openai_errors.lua) and this interceptor compares them with the fields of the
method's request message (their proto and JSON names, both of which the transcoder takes). Only the top level is
checked: a misspelled field inside a message object is still dropped. Raw bodies (google.api.HttpBody: uploads, batch
creation) are the services' own to check."""

from __future__ import annotations

import grpc
from google.api import annotations_pb2
from google.protobuf import descriptor_pool

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.service_auth import refusing

KEYS_HEADER = "x-llmaas-json-keys"
TOO_MANY = "+"  # the edge's mark for keys past its limit
RAW_BODY = "google.api.HttpBody"


def fields_of(method: str) -> frozenset[str] | None:
    """The names a JSON body of `method` (a gRPC path, /package.Service/Method) may use; None when its body is raw or
    the method is unknown here."""
    service, _, name = method[1:].rpartition("/")
    try:
        descriptor = descriptor_pool.Default().FindMethodByName(f"{service}.{name}")
    except KeyError:
        return None
    message = descriptor.input_type
    if message.full_name == RAW_BODY:
        return None
    rule = descriptor.GetOptions().Extensions[annotations_pb2.http]
    if rule.additional_bindings:
        return None  # bindings that may map the body differently: not checked
    if rule.body and rule.body != "*":
        # The body is one field of the request (`body: "policy"`): its keys are that message's fields.
        field = message.fields_by_name.get(rule.body)
        if field is None or field.message_type is None:
            return None
        message = field.message_type
    return message_fields(message)


def message_fields(message) -> frozenset[str]:
    """The JSON names of a message descriptor's fields: proto names and lowerCamel ones, as the transcoder takes."""
    return frozenset(n for f in message.fields for n in (f.name, f.json_name))


def unrecognized(name: str) -> ApiError:
    return invalid_request(f"Unrecognized request argument supplied: {name[:64]}", param=name[:64],
                           code="unknown_parameter")


def refuse_unknown_fields(body: dict, message) -> None:
    """A 400 naming the first top-level key of a parsed JSON body that `message` (a descriptor) does not define: for
    bodies that do not come through the transcoder (batch lines)."""
    allowed = message_fields(message)
    for key in body:
        if key not in allowed:
            raise unrecognized(key)


def unknown_field(keys: str, allowed: frozenset[str]) -> str | None:
    for key in keys.split(","):
        if key not in allowed:
            return key
    return None


class UnknownFieldsInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a transcoded call whose JSON body had a top-level field its request message does not define. Sits
    inside llmaas.common.server.ErrorInterceptor; calls without the edge's header (gRPC callers) pass untouched."""

    def __init__(self) -> None:
        self._fields: dict[str, frozenset[str] | None] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        keys = next((v for k, v in handler_call_details.invocation_metadata or () if k == KEYS_HEADER), None)
        if keys is None:
            return handler
        method = handler_call_details.method
        if method not in self._fields:
            self._fields[method] = fields_of(method)  # bounded: only methods the server has get this far
        allowed = self._fields[method]
        if allowed is None:
            return handler
        if TOO_MANY in keys.split(","):
            return refusing(handler, invalid_request("The request body has too many top-level fields.",
                                                      code="unknown_parameter"))
        unknown = unknown_field(keys, allowed)
        if unknown is None:
            return handler
        return refusing(handler, unrecognized(unknown))
