"""Unknown JSON fields, top-level or one level in, are a 400 naming the first (llmaas.common.json_fields); the edge's
half, the key listing in gateway/openai_errors.lua, is driven through the real Envoy in tests/e2e/test_hostile_edge.py."""

from __future__ import annotations

from types import SimpleNamespace

import grpc
import pytest
from llmaas.auth.v1 import auth_pb2
from llmaas.common.errors import ApiError
from llmaas.common.json_fields import (
    KEYS_HEADER,
    KnownFields,
    UnknownFieldsInterceptor,
    fields_of,
    refuse_unknown_fields,
    request_message,
)
from llmaas.router.v1 import router_pb2

CHAT = "/llmaas.router.v1.RouterService/ChatCompletionsHttp"


def test_a_json_body_may_use_proto_and_json_names_of_its_message():
    allowed = fields_of(CHAT)
    assert {"max_tokens", "maxTokens", "messages", "model"} <= allowed
    known = KnownFields(request_message(CHAT))
    assert known.unknown("model,messages,max_tokens,stream_options") is None
    assert known.unknown("model,messages,temprature,max_token") == "temprature"


def test_the_objects_one_level_in_are_checked_against_their_message():
    known = KnownFields(request_message(CHAT))
    assert known.unknown("model,messages,stream_options,messages[0].role,messages[0].content,messages[1].toolCallId,"
                         "stream_options.include_usage,messages[2].refusal,messages[2].reasoning_content") is None
    assert known.unknown("model,messages,messages[0].role,messages[3].nmae") == "messages[3].nmae"
    assert known.unknown("model,stream_options,stream_options.include_usag") == "stream_options.include_usag"
    # Free-form values (Struct: tools, response_format, metadata) and scalars are the services' own to check.
    assert known.unknown("model,tools,tools[0].type,tools[0].anything,response_format,response_format.x,"
                         "metadata,metadata.k") is None


def test_a_batch_lines_body_is_checked_the_same_way():
    message = router_pb2.CreateChatCompletionRequest.DESCRIPTOR
    refuse_unknown_fields({"model": "m", "messages": [{"role": "user", "content": "hi"}], "tools": [{"x": 1}],
                           "stream_options": {"include_usage": True}}, message)
    for body, name in (({"model": "m", "messages": [{"role": "user"}, {"role": "user", "contnet": "hi"}]},
                        "messages[1].contnet"), ({"stream_options": {"usage": True}}, "stream_options.usage")):
        with pytest.raises(ApiError) as e:
            refuse_unknown_fields(body, message)
        assert e.value.param == name and e.value.message == f"Unrecognized request argument supplied: {name}"


def test_raw_bodies_and_unknown_methods_are_not_checked():
    assert fields_of("/llmaas.router.v1.RouterService/CreateFileHttp") is None
    assert fields_of("/llmaas.router.v1.RouterService/Nope") is None
    assert fields_of("/nope.Service/Method") is None


class FakeContext:
    """Unit-test fake of a grpc.aio servicer context: records the abort."""

    def __init__(self):
        self.trailing, self.aborted = (), None

    def set_trailing_metadata(self, md):
        self.trailing = md

    async def abort(self, status, message):
        self.aborted = (status, message)
        raise grpc.aio.AbortError()


async def call(keys: str | None, method: str = CHAT):
    async def behaviour(request, context):
        return "served"

    async def continuation(details):
        return grpc.unary_unary_rpc_method_handler(behaviour)

    metadata = (("x-other", "1"),) + (((KEYS_HEADER, keys),) if keys is not None else ())
    handler = await UnknownFieldsInterceptor().intercept_service(
        continuation, SimpleNamespace(method=method, invocation_metadata=metadata))
    context = FakeContext()
    try:
        return await handler.unary_unary(None, context), context
    except grpc.aio.AbortError:
        return None, context


@pytest.mark.parametrize("misspelled", ["temprature", "messages[1].contnet"])
async def test_a_misspelled_field_is_refused_naming_it_before_the_handler_runs(misspelled):
    served, context = await call(f"model,messages,messages[0].role,{misspelled}")
    assert served is None and context.aborted[1] == f"Unrecognized request argument supplied: {misspelled}"


async def test_a_misspelled_top_level_field_is_refused_with_its_param():
    served, context = await call("model,messages,temprature")
    assert served is None and context.aborted[0] == grpc.StatusCode.INVALID_ARGUMENT
    assert context.aborted[1] == "Unrecognized request argument supplied: temprature"
    assert any(b"temprature" in v.encode() if isinstance(v, str) else b"temprature" in v for _, v in context.trailing)


@pytest.mark.parametrize("keys", [None, "model,messages,temperature,maxTokens"])
async def test_known_fields_and_calls_without_the_edges_list_are_served(keys):
    assert (await call(keys))[0] == "served"


async def test_more_keys_than_the_edge_lists_is_refused():
    served, context = await call("model,messages," + "+")
    assert served is None and "too many" in context.aborted[1]


def test_a_body_bound_to_one_field_is_checked_against_that_fields_message():
    from llmaas.guard.v1 import guard_pb2  # noqa: F401  (SetTenantPolicy: body "policy")

    allowed = fields_of("/llmaas.guard.v1.GuardService/SetTenantPolicy")
    assert {"mode", "threshold"} <= allowed and "policy" not in allowed


def test_a_maps_keys_are_its_entries_not_fields():
    known = KnownFields(auth_pb2.CreateApiKeyRequest.DESCRIPTOR)
    assert known.unknown("tenant_id,name,labels,labels.team,labels.anything") is None
    refuse_unknown_fields({"labels": {"team": "a"}}, auth_pb2.CreateApiKeyRequest.DESCRIPTOR)


def test_a_batch_lines_null_values_are_absences_as_at_the_edge():
    message = router_pb2.CreateChatCompletionRequest.DESCRIPTOR
    refuse_unknown_fields({"model": "m", "messages": [{"role": "assistant", "content": "x", "whatever": None}]},
                          message)


def test_what_an_earlier_answers_message_carries_back_is_known():
    known = KnownFields(request_message(CHAT))
    assert known.unknown("model,messages,messages[1].annotations,messages[1].parsed,messages[1].audio,"
                         "messages[1].function_call,stream_options,stream_options.include_obfuscation") is None
