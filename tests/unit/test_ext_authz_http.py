"""Envoy's ext_authz over HTTP (llmaas.auth.ext_authz_http): the gRPC Check's decision, answer for answer, on the
real key store and audit log; only the edge may ask; anything unexpected fails closed in the platform's words; the
health check answers outside the authorization prefix, so no client path can reach it."""

from __future__ import annotations

import contextlib
import json
import time
import uuid

import aiohttp
import pytest
import sqlalchemy as sa
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from llmaas.auth.abuse import DenialTally, FailureLimiter
from llmaas.auth.audit import AuditLog, AuditStore, AuditUnavailable
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.ext_authz import ExtAuthzServicer
from llmaas.auth.ext_authz_http import (
    DRAIN_SECONDS,
    HEADERS_TO_REMOVE,
    HEALTH_PATH,
    PATH_PREFIX,
    PEER_HEADER,
    UNAVAILABLE_STATUS,
    ExtAuthzHttpServer,
)
from llmaas.common.identity import CLIENT_ADDRESS_HEADER, IDENTITY_HEADER, decode_identity
from llmaas.common.metrics import REGISTRY
from llmaas.common.service_auth import EDGE, ROUTER, SERVICE_HEADER, mint_service_token

from tests.support.auth_store import SECRET, auth_engine, key_store

ADMIN = "admin-token-for-tests"


def edge_token() -> str:
    """The edge's credential, minted when used (a service token lives minutes; the suite runs longer)."""
    return mint_service_token(EDGE, "auth", SECRET)


class Auth:
    """Both transports over one real key store and audit log (SQLite)."""

    def __init__(self, database_url: str) -> None:
        self.engine = auth_engine(database_url)
        self.log = AuditLog(AuditStore(self.engine))
        keys = key_store(self.engine, cache_seconds=60.0)
        tenant = keys.create_tenant("acme")
        self.tenant_id = tenant.id
        record, self.api_key = keys.create_key(tenant.id, "app")
        self.key_id = record.id
        _, self.admin_key = keys.create_key(tenant.id, "admin", role="tenant_admin")
        self.authorizer = Authorizer(keys, self.log, ADMIN, limiter=FailureLimiter(10.0, 3),
                                     tally=DenialTally(self.log, 60.0))
        self.grpc = ExtAuthzServicer(self.authorizer, SECRET)
        self.http = ExtAuthzHttpServer(self.authorizer, SECRET)

    async def ask(self, path: str, *, key: str | None = None, method: str = "POST",
                  peer: str = "192.0.2.10", credential: str | None = "edge", request_id: str | None = None,
                  extra: dict | None = None) -> tuple[int, dict, bytes]:
        headers = {PEER_HEADER: peer, "x-request-id": request_id or str(uuid.uuid4()), **(extra or {})}
        if key is not None:
            headers["authorization"] = f"Bearer {key}"
        if credential is not None:
            headers[SERVICE_HEADER] = edge_token() if credential == "edge" else credential
        async with aiohttp.ClientSession() as session, session.request(
                method, f"http://127.0.0.1:{self.http.port}{path}", headers=headers) as r:
            return r.status, dict(r.headers), await r.read()

    async def check_grpc(self, path: str, *, key: str | None = None, method: str = "POST",
                         peer: str = "192.0.2.10") -> external_auth_pb2.CheckResponse:
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path = method, path
        if key is not None:
            http.headers["authorization"] = f"Bearer {key}"
        http.headers["x-request-id"] = str(uuid.uuid4())
        request.attributes.source.address.socket_address.address = peer
        return await self.grpc.Check(request, None)

    async def audited(self) -> list[dict]:
        self.authorizer.flush_failures()
        await self.log.flush()
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT action, status, endpoint, client_address, request_id FROM audit_events ORDER BY seq"))]


@contextlib.asynccontextmanager
async def running(database_url: str):
    """In the test's own event loop (the suite's async fixtures run in the session's)."""
    auth = Auth(database_url)
    await auth.http.start("127.0.0.1", 0)
    try:
        yield auth
    finally:
        await auth.http.close()
        await auth.authorizer.close()
        await auth.log.close()


def _decisions_timed() -> float:
    return REGISTRY.get_sample_value("llmaas_auth_ext_authz_decision_seconds_count") or 0.0


async def test_a_valid_key_is_allowed_with_its_identity_bound_to_the_request(database_url):
    async with running(database_url) as auth:
        timed = _decisions_timed()
        request_id = str(uuid.uuid4())
        status, headers, _ = await auth.ask(f"{PATH_PREFIX}/v1/chat/completions?secret=1", key=auth.api_key,
                                            request_id=request_id)
        assert status == 200
        assert headers[HEADERS_TO_REMOVE] == "authorization"  # Envoy drops the key before any service sees it
        assert headers[CLIENT_ADDRESS_HEADER] == "192.0.2.10"
        identity = decode_identity(headers[IDENTITY_HEADER], SECRET)
        assert (identity.tenant_id, identity.key_id) == (auth.tenant_id, auth.key_id)
        assert (identity.request_id, identity.client_address) == (request_id, "192.0.2.10")
        [record] = [r for r in await auth.audited() if r["request_id"] == request_id]
        # The client's path without the prefix and without its query string; the peer Envoy saw.
        assert (record["action"], record["endpoint"], record["client_address"]) == (
            "request.authorized", "POST /v1/chat/completions", "192.0.2.10")
        # Its time is in auth's metrics, as a gRPC Check's is.
        assert _decisions_timed() == timed + 1


@pytest.mark.parametrize("case", ["missing", "invalid", "admin key on models", "app key on admin"])
async def test_refusals_are_the_grpc_checks_status_headers_and_body(database_url, case):
    async with running(database_url) as auth:
        key, path = {"missing": (None, "/v1/models"), "invalid": ("sk-llmaas-0123456789abcdef-wrong", "/v1/models"),
                     "admin key on models": (auth.admin_key, "/v1/models"),
                     "app key on admin": (auth.api_key, "/admin/v1/keys")}[case]
        status, headers, body = await auth.ask(PATH_PREFIX + path, key=key, method="GET")
        expected = await auth.check_grpc(path, key=key, method="GET", peer="192.0.2.99")
        assert expected.status.code != code_pb2.OK
        assert status == expected.denied_response.status.code and status in (401, 403)
        assert json.loads(body) == json.loads(expected.denied_response.body)
        assert set(json.loads(body)["error"]) == {"message", "type", "param", "code"}
        assert headers["Content-Type"] == "application/json"
        assert IDENTITY_HEADER not in headers


async def test_past_the_failure_budget_a_429_with_retry_after(database_url):
    async with running(database_url) as auth:
        statuses = [(await auth.ask(f"{PATH_PREFIX}/v1/models", key="garbage"))[0] for _ in range(5)]
        assert statuses == [401] * 3 + [429] * 2
        status, headers, body = await auth.ask(f"{PATH_PREFIX}/v1/models", key="garbage")
        assert status == 429 and headers["Retry-After"] == "1"
        assert json.loads(body)["error"]["code"] == "rate_limit_exceeded"
        # Another peer has its own budget, and the valid key of the same peer is served.
        assert (await auth.ask(f"{PATH_PREFIX}/v1/models", key="garbage", peer="192.0.2.11"))[0] == 401
        assert (await auth.ask(f"{PATH_PREFIX}/v1/models", key=auth.api_key))[0] == 200


@pytest.mark.parametrize("credential", ["none", "forged", "another service's", "expired"])
async def test_only_the_edge_may_ask(database_url, credential):
    """Without the edge's own credential (none, forged, another service's, expired): 503, nothing decided."""
    token = {"none": None, "forged": "s1.forged.forged", "another service's": mint_service_token(ROUTER, "auth", SECRET),
             "expired": mint_service_token(EDGE, "auth", SECRET, ttl=-1)}[credential]
    async with running(database_url) as auth:
        status, headers, body = await auth.ask(f"{PATH_PREFIX}/v1/models", key=auth.api_key,
                                               credential=token)
        assert status == 503 and IDENTITY_HEADER not in headers
        assert json.loads(body)["error"]["code"] == "service_unavailable"
        assert await auth.audited() == []


async def test_health_answers_outside_the_prefix_and_fails_once_draining(database_url):
    async with running(database_url) as auth:
        url = f"http://127.0.0.1:{auth.http.port}"
        async with aiohttp.ClientSession() as session, session.get(url + HEALTH_PATH) as r:
            assert r.status == 200
        # A client's own path arrives under the prefix: never the health check, never allowed without a key.
        status, headers, _ = await auth.ask(PATH_PREFIX + HEALTH_PATH, method="GET")
        assert status == 401 and IDENTITY_HEADER not in headers
        # Outside the prefix, nothing is decided, whatever the key.
        assert (await auth.ask("/v1/models", key=auth.api_key, method="GET"))[0] == 404
        auth.http.drain()
        async with aiohttp.ClientSession() as session, session.get(url + HEALTH_PATH) as r:
            assert r.status == 503
            assert r.headers["Connection"] == "close"  # Envoy's next check goes to a replica in the rotation
        assert (await auth.ask(f"{PATH_PREFIX}/v1/models", key=auth.api_key))[0] == 200
        # It keeps answering for DRAIN_SECONDS after the drain (Envoy's health checks take it out meanwhile).
        started = time.monotonic()
        await auth.http.close()
        assert time.monotonic() - started >= DRAIN_SECONDS - 0.1


class FailingAuthorizer:
    """An authorizer that breaks (unit test fake): the HTTP answer must still be a closed door."""

    async def authorize(self, *args, **kwargs):
        raise RuntimeError("the database went away")


async def _asked_with(authorizer) -> tuple[int, dict, dict]:
    """One check, from the edge, of a server over `authorizer` (a unit test fake): status, headers, JSON body."""
    server = ExtAuthzHttpServer(authorizer, SECRET)
    await server.start("127.0.0.1", 0)
    try:
        async with aiohttp.ClientSession() as session, session.get(
                f"http://127.0.0.1:{server.port}{PATH_PREFIX}/v1/models",
                headers={SERVICE_HEADER: edge_token(), "authorization": "Bearer sk-x"}) as r:
            return r.status, dict(r.headers), await r.json()
    finally:
        await server.close()


async def test_an_unexpected_error_fails_closed_in_the_platforms_words():
    status, headers, body = await _asked_with(FailingAuthorizer())
    assert status == 503 and IDENTITY_HEADER not in headers
    assert body["error"]["type"] == "service_unavailable_error" and "database" not in json.dumps(body)


class UnauditableAuthorizer:
    """An authorizer whose audit trail cannot take the record (unit test fake)."""

    async def authorize(self, *args, **kwargs):
        raise AuditUnavailable("store failing")


async def test_an_unauditable_request_is_refused_with_the_status_the_edge_turns_into_503():
    """Envoy would replace any 5xx of auth's with its own body: auth's 503 goes as UNAVAILABLE_STATUS, body and
    Retry-After intact (gateway/envoy.yaml.j2 maps it back; tests/e2e/test_zz_auth_down.py sees the 503)."""
    status, headers, body = await _asked_with(UnauditableAuthorizer())
    assert status == UNAVAILABLE_STATUS and headers["Retry-After"] == "1"
    assert IDENTITY_HEADER not in headers
    assert "cannot be audited" in body["error"]["message"]
