"""Every internal RPC authenticates its caller, through the real stack (llmaas.common.service_auth): without the
service credential every internal method of every service is UNAUTHENTICATED with an OpenAI-shaped error; with it, a
call acting for a tenant still needs that tenant's signed, unexpired identity; Envoy's own calls (ext_authz Check)
carry the edge's credential; nothing internal is reachable through the edge even with one; reflection is off."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import grpc
import httpx
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.common.errors import ERROR_METADATA_KEY
from llmaas.common.identity import IDENTITY_HEADER, Identity, encode_identity
from llmaas.common.service_auth import EDGE, ROUTER
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc

from tests.e2e.test_metering import new_tenant
from tests.support.service_auth import internal_secret, new_request_id, service_metadata, tenant_metadata
from tests.support.stack import RETIRED_MODEL, TEST_MODEL, gateway_channel

pytestmark = pytest.mark.e2e

# (service, stub, method, request): every internal RPC of every service.
INTERNAL_RPCS = [
    ("auth", auth_pb2_grpc.AuthInternalServiceStub, "Authenticate", auth_pb2.AuthenticateRequest(api_key="x")),
    ("auth", auth_pb2_grpc.AuthInternalServiceStub, "RecordRequest", auth_pb2.RecordRequestRequest(request_id="r")),
    ("auth", auth_pb2_grpc.AuthInternalServiceStub, "RecordRequests", auth_pb2.RecordRequestsRequest()),
    ("auth", auth_pb2_grpc.AuthInternalServiceStub, "CurrentIdentity",
     auth_pb2.CurrentIdentityRequest(tenant_id="t", key_id="k")),
    ("auth", external_auth_pb2_grpc.AuthorizationStub, "Check", external_auth_pb2.CheckRequest()),
    ("catalog", catalog_pb2_grpc.CatalogInternalServiceStub, "ResolveModel",
     catalog_pb2.ResolveModelRequest(model=TEST_MODEL)),
    ("catalog", catalog_pb2_grpc.CatalogInternalServiceStub, "WatchCatalog", catalog_pb2.WatchCatalogRequest()),
    ("catalog", catalog_pb2_grpc.CatalogInternalServiceStub, "ReportReplicaFailure",
     catalog_pb2.ReportReplicaFailureRequest(replica="127.0.0.1:1", triton_model="m")),
    ("guard", guard_pb2_grpc.GuardInternalServiceStub, "CheckPrompt", guard_pb2.CheckPromptRequest(tenant_id="t")),
    ("metering", metering_pb2_grpc.MeteringInternalServiceStub, "Reserve",
     metering_pb2.ReserveRequest(request_id="r", tenant_id="t", key_id="k")),
    ("metering", metering_pb2_grpc.MeteringInternalServiceStub, "Settle",
     metering_pb2.SettleRequest(request_id="r", outcome="completed")),
    ("metering", metering_pb2_grpc.MeteringInternalServiceStub, "SettleBatch", metering_pb2.SettleBatchRequest()),
]


def _call(address: str | grpc.Channel, stub_class, method: str, request, metadata=()):
    """`address`: a service's host:port (a plain channel), or a channel (the edge's, over TLS)."""
    with (grpc.insecure_channel(address) if isinstance(address, str) else address) as channel:
        rpc = getattr(stub_class(channel), method)
        answer = rpc(request, metadata=metadata, timeout=10)
        return next(answer) if method == "WatchCatalog" else answer


def _refused(call) -> tuple[grpc.StatusCode, dict]:
    with pytest.raises(grpc.RpcError) as e:
        call()
    body = json.loads(dict(e.value.trailing_metadata())[ERROR_METADATA_KEY])["error"]
    assert set(body) == {"message", "type", "param", "code"}
    return e.value.code(), body


@pytest.mark.parametrize(("service", "stub", "method", "request_"), INTERNAL_RPCS,
                         ids=[f"{s}.{m}" for s, _, m, _ in INTERNAL_RPCS])
def test_every_internal_rpc_without_a_service_credential_is_unauthenticated(stack, service, stub, method, request_):
    address = stack["services"][service]
    code, error = _refused(lambda: _call(address, stub, method, request_))
    assert code == grpc.StatusCode.UNAUTHENTICATED and error["code"] == "invalid_service_credential"
    # Nor with a credential meant for another service, or from a caller not allowed there.
    other = "guard" if service != "guard" else "metering"
    wrong_caller = EDGE if method != "Check" else ROUTER
    for md in (service_metadata(stack, other), service_metadata(stack, service, caller=wrong_caller)):
        code, _ = _refused(lambda md=md: _call(address, stub, method, request_, md))
        assert code == grpc.StatusCode.UNAUTHENTICATED


def test_a_call_for_a_tenant_needs_that_tenants_unexpired_identity(stack):
    tenant, other = new_tenant(stack, "bound"), new_tenant(stack, "bound-other")
    rid = new_request_id()
    metering = stack["services"]["metering"]
    reserve = metering_pb2.ReserveRequest(request_id=rid, tenant_id=tenant, key_id="k", model=TEST_MODEL,
                                          max_input_tokens=4, max_output_tokens=4)
    stub = metering_pb2_grpc.MeteringInternalServiceStub
    # The service credential alone: no identity.
    code, error = _refused(lambda: _call(metering, stub, "Reserve", reserve, service_metadata(stack, "metering")))
    assert (code, error["code"]) == (grpc.StatusCode.UNAUTHENTICATED, "missing_identity")
    # Another tenant's identity, or this tenant's bound to another request.
    for md in (tenant_metadata(stack, "metering", other, request_id=rid),
               tenant_metadata(stack, "metering", tenant, request_id=new_request_id())):
        code, error = _refused(lambda md=md: _call(metering, stub, "Reserve", reserve, md))
        assert (code, error["code"]) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    # An expired identity.
    expired = encode_identity(Identity(tenant, "k"), internal_secret(stack), request_id=rid, ttl=-1)
    md = (*service_metadata(stack, "metering"), (IDENTITY_HEADER, expired))
    code, error = _refused(lambda: _call(metering, stub, "Reserve", reserve, md))
    assert (code, error["code"]) == (grpc.StatusCode.UNAUTHENTICATED, "invalid_identity")
    # The guard and the catalog likewise.
    check = guard_pb2.CheckPromptRequest(tenant_id=tenant, request_id=rid,
                                         parts=[guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_USER, text="hi")])
    code, _ = _refused(lambda: _call(stack["services"]["guard"], guard_pb2_grpc.GuardInternalServiceStub,
                                     "CheckPrompt", check, tenant_metadata(stack, "guard", other, request_id=rid)))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    assert _call(stack["services"]["guard"], guard_pb2_grpc.GuardInternalServiceStub, "CheckPrompt", check,
                 tenant_metadata(stack, "guard", tenant, request_id=rid)).decision == guard_pb2.DECISION_ALLOW
    successor = catalog_pb2.ResolveModelRequest(model=RETIRED_MODEL, serve_successor=True)
    code, _ = _refused(lambda: _call(stack["services"]["catalog"], catalog_pb2_grpc.CatalogInternalServiceStub,
                                     "ResolveModel", successor, tenant_metadata(stack, "catalog", tenant,
                                                                                request_id=rid)))
    assert code == grpc.StatusCode.PERMISSION_DENIED  # the tenant did not opt in to successors
    # With both, as the router calls it: granted.
    assert _call(metering, stub, "Reserve", reserve, tenant_metadata(stack, "metering", tenant, request_id=rid)).granted


def test_a_keys_current_identity_needs_that_keys_identity_and_sees_its_revocation(stack):
    from tests.e2e.test_metering import admin, new_key

    tenant = new_tenant(stack, "current")
    key_id, _ = new_key(stack, tenant)
    auth, stub = stack["services"]["auth"], auth_pb2_grpc.AuthInternalServiceStub
    request = auth_pb2.CurrentIdentityRequest(tenant_id=tenant, key_id=key_id)
    for md in (tenant_metadata(stack, "auth", tenant, "another-key", request_id=new_request_id()),
               tenant_metadata(stack, "auth", new_tenant(stack, "current-other"), key_id, request_id=new_request_id())):
        code, error = _refused(lambda md=md: _call(auth, stub, "CurrentIdentity", request, md))
        assert (code, error["code"]) == (grpc.StatusCode.PERMISSION_DENIED, "identity_mismatch")
    md = tenant_metadata(stack, "auth", tenant, key_id, request_id=new_request_id())
    now = _call(auth, stub, "CurrentIdentity", request, md)
    assert now.status == "active" and (now.identity.tenant_id, now.identity.key_id) == (tenant, key_id)
    admin(stack, "POST", f"/tenants/{tenant}/keys/{key_id}/revoke", json={})
    now = _call(auth, stub, "CurrentIdentity", request, md)
    assert now.status == "revoked" and not now.HasField("identity")


def test_a_settlement_item_is_refused_without_its_requests_identity(stack):
    tenant = new_tenant(stack, "settle-bound")
    rid = new_request_id()
    metering, stub = stack["services"]["metering"], metering_pb2_grpc.MeteringInternalServiceStub
    _call(metering, stub, "Reserve", metering_pb2.ReserveRequest(
        request_id=rid, tenant_id=tenant, key_id="k", model=TEST_MODEL, max_input_tokens=4, max_output_tokens=4),
        tenant_metadata(stack, "metering", tenant, request_id=rid))
    secret = internal_secret(stack)
    items = [metering_pb2.SettleRequest(request_id=rid, prompt_tokens=1, outcome="completed",
                                        identity=encode_identity(Identity(tenant, "k"), secret,
                                                                 request_id=new_request_id())),
             metering_pb2.SettleRequest(request_id=rid, prompt_tokens=1, outcome="completed",
                                        identity=encode_identity(Identity(tenant, "k"), secret, request_id=rid))]
    results = _call(metering, stub, "SettleBatch", metering_pb2.SettleBatchRequest(items=items),
                    service_metadata(stack, "metering")).results
    assert results[0].error_code == "invalid_identity" and results[1].settlement.recorded


def test_envoy_calls_auth_with_its_own_credential_which_a_client_cannot_replace(stack):
    """Chat through the edge works (ext_authz Check carries the edge's credential, the router its own), and a client's
    x-llmaas-service header is dropped at the edge. The edge's credential lives in Envoy's config, the owner's only."""
    headers = {"Authorization": f"Bearer {stack['api_key']}", "x-llmaas-service": "s1.forged.mac"}
    r = httpx.post(stack["base_url"] + "/chat/completions", headers=headers, timeout=30,
                   json={"model": TEST_MODEL, "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 200, r.text
    config = Path(stack["data_dir"]) / "envoy" / "envoy.yaml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    assert internal_secret(stack) not in config.read_text()


@pytest.mark.parametrize(("service", "stub", "method", "request_"), INTERNAL_RPCS,
                         ids=[f"{s}.{m}" for s, _, m, _ in INTERNAL_RPCS])
def test_no_internal_rpc_is_reachable_through_the_edge_even_with_a_credential(stack, service, stub, method, request_):
    md = (("authorization", f"Bearer {stack['api_key']}"),
          *service_metadata(stack, service, caller=EDGE if method == "Check" else ROUTER))
    with pytest.raises(grpc.RpcError) as e:
        _call(gateway_channel(stack), stub, method, request_, md)
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED  # Envoy's 404


@pytest.mark.parametrize("service", ["auth", "catalog", "guard", "metering", "router"])
def test_reflection_is_off_by_default(stack, service):
    with grpc.insecure_channel(stack["services"][service]) as channel, pytest.raises(grpc.RpcError) as e:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        next(stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]), timeout=10))
    assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
