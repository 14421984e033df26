"""Unknown JSON fields are a 400, as OpenAI answers them ("Unrecognized request argument supplied"), not silently
dropped: Envoy's transcoder drops a JSON field its message does not have, so the edge lists the body's keys in
KEYS_HEADER (gateway/openai_errors.lua: the top-level keys, then the keys of the objects one level in, named by their
path, "stream_options.include_usage" or "messages[2].nmae") and this interceptor compares them with the fields of
the method's request message and of its nested messages (their proto and JSON names, both of which the transcoder
takes). Free-form values (google.protobuf.Struct: tools, response_format, metadata) are the services' own to check,
as are raw bodies (google.api.HttpBody: uploads, batch creation). Deeper objects (a tool call's `function`) are not
listed by the edge."""

from __future__ import annotations

import re

import grpc
from google.api import annotations_pb2
from google.protobuf import descriptor_pool

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.service_auth import refusing

KEYS_HEADER = "x-llmaas-json-keys"
TOO_MANY = "+"  # the edge's mark for keys past its limit
RAW_BODY = "google.api.HttpBody"
FREE_FORM = frozenset({"google.protobuf.Struct", "google.protobuf.Value", "google.protobuf.ListValue"})
_PATH = re.compile(r"^([A-Za-z0-9_]+)(\[\d+\])?\.(.+)$")  # field, [index], key: a nested entry of the edge's list


def request_message(method: str):
    """The message a JSON body of `method` (a gRPC path, /package.Service/Method) fills; None when its body is raw or
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
    return message


def fields_of(method: str) -> frozenset[str] | None:
    """The top-level names a JSON body of `method` may use; None when not checked."""
    message = request_message(method)
    return None if message is None else message_fields(message)


def message_fields(message) -> frozenset[str]:
    """The JSON names of a message descriptor's fields: proto names and lowerCamel ones, as the transcoder takes."""
    return frozenset(n for f in message.fields for n in (f.name, f.json_name))


def nested_fields(message, name: str) -> frozenset[str] | None:
    """The names the object in field `name` of `message` (or each object of its list) may use; None when that
    field is not a message of known fields (a scalar, a free-form Struct, not a field)."""
    field = message.fields_by_camelcase_name.get(name) or message.fields_by_name.get(name)
    if (field is None or field.message_type is None or field.message_type.full_name in FREE_FORM
            or field.message_type.GetOptions().map_entry):  # a map's keys are its entries, not fields
        return None
    return message_fields(field.message_type)


def unrecognized(name: str) -> ApiError:
    return invalid_request(f"Unrecognized request argument supplied: {name[:80]}", param=name[:80],
                           code="unknown_parameter")


def refuse_unknown_fields(body: dict, message) -> None:
    """A 400 naming the first key of a parsed JSON body that `message` (a descriptor) does not define, at the top
    level or in an object one level in (as the edge lists them): for bodies that do not come through the transcoder
    (batch lines)."""
    allowed = message_fields(message)
    for key in body:
        if key not in allowed:
            raise unrecognized(key)
    for key, value in body.items():
        objects = [(key, value)] if isinstance(value, dict) else [
            (f"{key}[{i}]", item) for i, item in enumerate(value) if isinstance(item, dict)] \
            if isinstance(value, list) else []
        if not objects or (inner := nested_fields(message, key)) is None:
            continue
        for path, item in objects:
            for name, inner_value in item.items():
                if inner_value is not None and name not in inner:  # null is an absence, as at the edge
                    raise unrecognized(f"{path}.{name}")


class KnownFields:
    """What one method's bodies may use, at the top level and one level in (nested sets computed once per field)."""

    def __init__(self, message) -> None:
        self._message = message
        self.top = message_fields(message)
        self._nested: dict[str, frozenset[str] | None] = {}

    def unknown(self, keys: str) -> str | None:
        """The first entry of the edge's list the message does not define."""
        for key in keys.split(","):
            if key in self.top:
                continue
            path = _PATH.match(key)
            if path is None:
                return key
            name = path.group(1)
            if name not in self._nested:
                if name not in self.top:
                    return name  # cannot happen: the edge lists a top-level key before what is in it
                self._nested[name] = nested_fields(self._message, name)
            inner = self._nested[name]
            if inner is not None and path.group(3) not in inner:
                return key
        return None


class UnknownFieldsInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a transcoded call whose JSON body had a field its request message does not define (top level, or one
    level in). Sits inside llmaas.common.server.ErrorInterceptor; calls without the edge's header (gRPC callers) pass
    untouched."""

    def __init__(self) -> None:
        self._fields: dict[str, KnownFields | None] = {}

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        keys = next((v for k, v in handler_call_details.invocation_metadata or () if k == KEYS_HEADER), None)
        if keys is None:
            return handler
        method = handler_call_details.method
        if method not in self._fields:
            # Bounded: only methods the server has get this far.
            message = request_message(method)
            self._fields[method] = None if message is None else KnownFields(message)
        known = self._fields[method]
        if known is None:
            return handler
        if TOO_MANY in keys.split(","):
            return refusing(handler, invalid_request("The request body has too many top-level fields.",
                                                      code="unknown_parameter"))
        unknown = known.unknown(keys)
        if unknown is None:
            return handler
        return refusing(handler, unrecognized(unknown))
