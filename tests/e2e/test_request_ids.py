"""Request ids are the platform's (metering and audit are idempotent by them, so a chosen id would make a replay free):
a direct gRPC caller's own x-request-id is ignored, a signed identity header is bound to its request and expires."""

from __future__ import annotations

import time

import grpc
import pytest
from llmaas.common.identity import ROLE_TENANT_ADMIN, Identity, encode_identity
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.e2e.test_metering import new_key, new_tenant, usage
from tests.support.service_auth import internal_secret
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e


def _request(text: str) -> router_pb2.CreateChatCompletionRequest:
    req = router_pb2.CreateChatCompletionRequest(model=TEST_MODEL, max_tokens=4)
    req.messages.add(role="user").content.string_value = text
    return req


def _served(stack, tenant_id: str, count: int) -> int:
    deadline = time.monotonic() + 15
    while True:
        served = int(usage(stack, tenant_id)["total"].get("requests", 0))
        if served >= count or time.monotonic() > deadline:
            return served
        time.sleep(0.2)


def test_a_replayed_request_id_on_the_direct_path_is_charged_each_time(stack):
    tenant_id = new_tenant(stack, "replay")
    _, key = new_key(stack, tenant_id)
    md = (("authorization", f"Bearer {key}"), ("x-request-id", "chosen-by-the-caller"))
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for i in range(3):
            r = stub.CreateChatCompletion(_request(f"Summarise report number {i} please"), metadata=md, timeout=30)
            assert r.choices[0].message.content
    assert _served(stack, tenant_id, 3) == 3  # three completions served, three charged
    time.sleep(0.5)
    assert int(usage(stack, tenant_id)["total"]["requests"]) == 3


def test_a_leaked_identity_header_serves_its_own_request_once_and_expires(stack):
    tenant_id = new_tenant(stack, "leaked")
    key_id, _ = new_key(stack, tenant_id)
    secret = internal_secret(stack)
    # What ext_authz signs for one request (as a header seen in a log would be), replayed straight to the router.
    leaked = encode_identity(Identity(tenant_id, key_id), secret, request_id="req-leaked-1", client_address="10.0.0.7")
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        md = (("x-llmaas-identity", leaked), ("x-request-id", "another-id"))
        assert stub.CreateChatCompletion(_request("Draft a short status update"), metadata=md, timeout=30).choices
        with pytest.raises(grpc.RpcError) as replayed:
            stub.CreateChatCompletion(_request("Draft another status update"), metadata=md, timeout=30)
        assert replayed.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "request_replayed" in dict(replayed.value.trailing_metadata())["x-llmaas-error"]
        expired = encode_identity(Identity(tenant_id, key_id), secret, request_id="req-leaked-2", ttl=-1)
        with pytest.raises(grpc.RpcError) as refused:
            stub.CreateChatCompletion(_request("Draft a status update"), metadata=(("x-llmaas-identity", expired),),
                                      timeout=30)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _served(stack, tenant_id, 1) == 1
    time.sleep(0.5)
    assert int(usage(stack, tenant_id)["total"]["requests"]) == 1  # served once, never twice


def test_only_an_application_key_bound_to_a_request_may_call_a_model(stack):
    tenant_id = new_tenant(stack, "unbound")
    key_id, _ = new_key(stack, tenant_id)
    secret = internal_secret(stack)
    unbound = encode_identity(Identity(tenant_id, key_id), secret)  # no request id: ext_authz never mints one
    admin = encode_identity(Identity(tenant_id, key_id, role=ROLE_TENANT_ADMIN), secret, request_id="req-admin-1")
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        for header in (unbound, admin):
            with pytest.raises(grpc.RpcError) as refused:
                stub.CreateChatCompletion(_request("Write a haiku about queues"),
                                          metadata=(("x-llmaas-identity", header),), timeout=30)
            assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
