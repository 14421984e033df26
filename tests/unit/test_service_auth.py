"""Internal RPCs authenticate their caller (llmaas.common.service_auth): the service token, and the interceptor as
the shared bootstrap installs it, on a real grpc.aio server with fake servicers (unit tests only)."""

from __future__ import annotations

import contextlib
import json

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.common.errors import ERROR_METADATA_KEY
from llmaas.common.identity import IDENTITY_HEADER, Identity, Quota, encode_identity
from llmaas.common.server import ErrorInterceptor
from llmaas.common.service_auth import (
    EDGE,
    ROUTER,
    SERVICE_HEADER,
    SERVICE_TOKEN_TTL_SECONDS,
    ServiceAuthInterceptor,
    ServiceCredentials,
    item_identity,
    mint_service_token,
    verify_service_token,
)
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc

SECRET = "s" * 32
NOW = 1_800_000_000.0
QUOTAS = (Quota(60, 10, 1000),)


# --- the token -------------------------------------------------------------------------------------------------------

def test_a_token_names_its_caller_for_its_audience_until_it_expires():
    token = mint_service_token(ROUTER, "metering", SECRET, ttl=600, now=NOW)
    assert verify_service_token(token, "metering", SECRET, now=NOW) == ROUTER
    assert verify_service_token(token, "metering", SECRET, now=NOW + 600) == ROUTER
    assert verify_service_token(token, "metering", SECRET, now=NOW + 601) is None  # expired
    assert verify_service_token(token, "guard", SECRET, now=NOW) is None  # another audience
    assert verify_service_token(token, "metering", "t" * 32, now=NOW) is None  # another secret


def test_a_tampered_or_foreign_token_does_not_verify():
    token = mint_service_token(ROUTER, "auth", SECRET, now=NOW)
    version, payload, mac = token.split(".")
    forged = mint_service_token(EDGE, "auth", "x" * 32, now=NOW).split(".")[1]
    assert verify_service_token(f"{version}.{forged}.{mac}", "auth", SECRET, now=NOW) is None
    assert verify_service_token(f"{version}.{payload}.{mac[:-2]}AA", "auth", SECRET, now=NOW) is None
    # An identity header signed with the same secret is no service token (different MAC input), nor the reverse.
    identity = encode_identity(Identity("t", "k"), SECRET, request_id="r")
    assert verify_service_token(identity, "auth", SECRET) is None
    assert verify_service_token("", "auth", SECRET) is None and verify_service_token("s1..", "auth", SECRET) is None


def test_credentials_are_minted_once_and_refreshed_at_half_their_life():
    clock = [NOW]
    credentials = ServiceCredentials(ROUTER, SECRET, clock=lambda: clock[0])
    first = credentials.metadata("metering")
    assert first[0][0] == SERVICE_HEADER
    assert verify_service_token(first[0][1], "metering", SECRET, now=NOW) == ROUTER
    clock[0] += SERVICE_TOKEN_TTL_SECONDS / 2 - 1
    assert credentials.metadata("metering") is first  # no signing per call
    assert credentials.metadata("guard") != first  # one per audience
    clock[0] += 1
    refreshed = credentials.metadata("metering")
    assert refreshed != first and verify_service_token(refreshed[0][1], "metering", SECRET, now=clock[0]) == ROUTER


def test_a_batch_item_identity_must_be_bound_to_its_request():
    signed = encode_identity(Identity("t", "k"), SECRET, request_id="r1")
    assert item_identity(signed, SECRET, "r1").tenant_id == "t"
    assert item_identity(signed, SECRET, "r2") is None
    assert item_identity("", SECRET, "r1") is None
    assert item_identity(encode_identity(Identity("t", "k"), SECRET), SECRET, "r1") is None  # unbound


def test_the_interceptor_forgets_nothing_it_cached_past_expiry():
    clock = [NOW]
    interceptor = ServiceAuthInterceptor("metering", SECRET, clock=lambda: clock[0])
    md = ((SERVICE_HEADER, mint_service_token(ROUTER, "metering", SECRET, ttl=10, now=NOW)),)
    assert interceptor.caller(md) == ROUTER
    clock[0] += 11
    assert interceptor.caller(md) is None  # the cached verification expires with the token
    assert interceptor.caller(((SERVICE_HEADER, mint_service_token(ROUTER, "guard", SECRET)),)) is None


# --- the interceptor, on a server ------------------------------------------------------------------------------------

class FakeMetering(metering_pb2_grpc.MeteringServiceServicer, metering_pb2_grpc.MeteringInternalServiceServicer):
    """Fake servicer (unit tests only): answers at once."""

    async def Reserve(self, request, context):
        return metering_pb2.ReserveResponse(granted=True)

    async def Settle(self, request, context):
        return metering_pb2.SettleResponse(recorded=True)

    async def ListTiers(self, request, context):
        return metering_pb2.ListTiersResponse()


class FakeCatalog(catalog_pb2_grpc.CatalogInternalServiceServicer):
    """Fake servicer (unit tests only)."""

    async def WatchCatalog(self, request, context):
        yield catalog_pb2.CatalogRevision(revision="1")


@contextlib.asynccontextmanager
async def serving():
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), ServiceAuthInterceptor("metering", SECRET)])
    metering_pb2_grpc.add_MeteringServiceServicer_to_server(FakeMetering(), server)
    metering_pb2_grpc.add_MeteringInternalServiceServicer_to_server(FakeMetering(), server)
    catalog_pb2_grpc.add_CatalogInternalServiceServicer_to_server(FakeCatalog(), server)
    health_pb2_grpc.add_HealthServicer_to_server(health.aio.HealthServicer(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        yield ch
    await server.stop(None)


def _reserve(tenant="t", key="k", rid="r1", quotas=QUOTAS):
    return metering_pb2.ReserveRequest(request_id=rid, tenant_id=tenant, key_id=key, quotas=[
        metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests, max_tokens=q.max_tokens)
        for q in quotas])


def _as_router(audience="metering", identity: Identity | None = None, rid="r1", secret=SECRET):
    md = ((SERVICE_HEADER, mint_service_token(ROUTER, audience, secret)),)
    if identity is not None:
        md += ((IDENTITY_HEADER, encode_identity(identity, secret, request_id=rid)),)
    return md


async def _refused(call, status: grpc.StatusCode) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as e:
        await call
    assert e.value.code() == status
    body = json.loads(dict(e.value.trailing_metadata())[ERROR_METADATA_KEY])  # OpenAI-shaped, like every error
    assert set(body["error"]) == {"message", "type", "param", "code"}
    return body["error"]["code"]


async def test_an_internal_call_without_a_valid_credential_of_an_allowed_caller_is_unauthenticated():
    async with serving() as channel:
        stub = metering_pb2_grpc.MeteringInternalServiceStub(channel)
        me = Identity("t", "k", quotas=QUOTAS)
        edge = ((SERVICE_HEADER, mint_service_token(EDGE, "metering", SECRET)),) + _as_router(identity=me)[1:]
        for md in ((), _as_router("guard", me), _as_router(identity=me, secret="w" * 32), edge,
                   ((SERVICE_HEADER, mint_service_token(ROUTER, "metering", SECRET, ttl=-1)),)):
            code = await _refused(stub.Reserve(_reserve(), metadata=md), grpc.StatusCode.UNAUTHENTICATED)
            assert code == "invalid_service_credential"
        # A stream too, refused before anything is sent.
        watch = catalog_pb2_grpc.CatalogInternalServiceStub(channel).WatchCatalog(catalog_pb2.WatchCatalogRequest())
        assert await _refused(watch.read(), grpc.StatusCode.UNAUTHENTICATED) == "invalid_service_credential"
        assert (await stub.Reserve(_reserve(), metadata=_as_router(identity=me))).granted


async def test_a_tenant_bound_call_needs_the_identity_of_the_tenant_key_and_request_it_names():
    async with serving() as channel:
        stub = metering_pb2_grpc.MeteringInternalServiceStub(channel)
        me = Identity("t", "k", quotas=QUOTAS)
        assert await _refused(stub.Reserve(_reserve(), metadata=_as_router()),
                              grpc.StatusCode.UNAUTHENTICATED) == "missing_identity"
        forged = _as_router() + ((IDENTITY_HEADER, encode_identity(me, "w" * 32, request_id="r1")),)
        assert await _refused(stub.Reserve(_reserve(), metadata=forged), grpc.StatusCode.UNAUTHENTICATED) \
            == "invalid_identity"
        for request, md in ((_reserve(tenant="other"), _as_router(identity=me)),
                            (_reserve(key="other"), _as_router(identity=me)),
                            (_reserve(), _as_router(identity=me, rid="r2")),
                            (_reserve(quotas=()), _as_router(identity=me))):
            assert await _refused(stub.Reserve(request, metadata=md), grpc.StatusCode.PERMISSION_DENIED) \
                == "identity_mismatch"
        settle = metering_pb2.SettleRequest(request_id="r1", outcome="completed")
        assert await _refused(stub.Settle(settle, metadata=_as_router(identity=me, rid="r2")),
                              grpc.StatusCode.PERMISSION_DENIED) == "identity_mismatch"
        assert (await stub.Settle(settle, metadata=_as_router(identity=me))).recorded


async def test_public_services_and_health_checks_need_no_service_credential():
    async with serving() as channel:
        await metering_pb2_grpc.MeteringServiceStub(channel).ListTiers(metering_pb2.ListTiersRequest())
        status = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest())
        assert status.status == health_pb2.HealthCheckResponse.SERVING


# --- reflection only where configured --------------------------------------------------------------------------------

def test_reflection_is_off_unless_llmaas_up_is_asked_for_it(tmp_path, monkeypatch):
    from llmaas.common.server import REFLECTION_ENV, reflection_enabled
    from llmaas.stack.ports import StackPorts
    from llmaas.stack.services import service_components
    from llmaas.stack.up import StackOptions

    assert StackOptions(data_dir=tmp_path).grpc_reflection is False

    def env(**options) -> list[dict]:
        return [c.env for c in service_components(tmp_path, StackPorts(30000), admin_token="t", internal_secret="s",
                                                  catalog_files=[], otlp_endpoint=None, **options)]

    assert not any(REFLECTION_ENV in e for e in env())
    assert all(e[REFLECTION_ENV] == "1" for e in env(grpc_reflection=True))
    monkeypatch.delenv(REFLECTION_ENV, raising=False)
    assert not reflection_enabled()
    monkeypatch.setenv(REFLECTION_ENV, "1")
    assert reflection_enabled()
