"""Internal callers: the same operations over gRPC, typed, straight to the router (authenticated by their key)."""

from __future__ import annotations

import grpc
import pytest
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e


def _request(**kw) -> router_pb2.CreateChatCompletionRequest:
    req = router_pb2.CreateChatCompletionRequest(model=TEST_MODEL, max_tokens=6, **kw)
    req.messages.add(role="user").content.string_value = "Tell the team about gRPC"
    return req


@pytest.fixture(scope="module")
def router(stack):
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        yield router_pb2_grpc.RouterServiceStub(channel), (("authorization", f"Bearer {stack['api_key']}"),)


def test_typed_completion(router):
    stub, md = router
    r = stub.CreateChatCompletion(_request(), metadata=md, timeout=30)
    assert r.object == "chat.completion" and r.model == TEST_MODEL
    assert r.choices[0].message.content and r.choices[0].finish_reason == "length"
    assert r.usage.completion_tokens == 6 and r.usage.total_tokens == r.usage.prompt_tokens + 6


def test_typed_stream(router):
    stub, md = router
    req = _request(stream_options=router_pb2.StreamOptions(include_usage=True))
    chunks = list(stub.StreamChatCompletion(req, metadata=md, timeout=30))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) == 6
    assert chunks[-1].usage.completion_tokens == 6 and not chunks[-1].choices


def test_without_key_is_unauthenticated(router):
    stub, _ = router
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(_request(), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_wrong_key_is_unauthenticated_with_openai_error(router):
    stub, _ = router
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(_request(), metadata=(("authorization", "Bearer sk-llmaas-nope"),), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert any(k == "x-llmaas-error" for k, _ in e.value.trailing_metadata())


def test_bad_parameter_is_invalid_argument(router):
    stub, md = router
    with pytest.raises(grpc.RpcError) as e:
        stub.CreateChatCompletion(_request(temperature=9), metadata=md, timeout=10)
    assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT
