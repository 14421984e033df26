"""The audit trail's write-behind writer and the guarantee it keeps (README, "Tenants, keys and the audit trail").

An authorised request goes on before its audit record is committed; the record is durable within DURABILITY_BOUND.
When a record has waited longer than that, requests wait for their own record's commit instead; when the store fails,
or the backlog is full, ext_authz denies with a 503 (fail closed). A record let through is never dropped: it is
retried until committed, and committed at shutdown.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
import uuid

import grpc
import pytest
import sqlalchemy as sa
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from llmaas.auth.audit import DURABILITY_BOUND, FLUSH_INTERVAL, AuditLog, AuditRecord, AuditStore, AuditUnavailable
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.ext_authz import ExtAuthzServicer
from llmaas.auth.servicer import AuthServicer
from llmaas.auth.v1 import auth_pb2
from llmaas.common.errors import ApiError

from tests.support.auth_store import SECRET, auth_engine, key_store
from tests.unit.test_auth_service import Context

ADMIN = "admin-token-for-tests"


class ControlledStore(AuditStore):
    """The real store (SQLite) with a gate that stalls commits and a switch that makes them fail, as a hung or a
    down database would (unit tests only). Notes when each record was committed."""

    def __init__(self, engine: sa.Engine) -> None:
        super().__init__(engine)
        self.open = threading.Event()
        self.open.set()
        self.failing = False
        self.committed_at: dict[str, float] = {}

    def append_batch(self, records):
        self.open.wait(30)
        if self.failing:
            raise sa.exc.OperationalError("INSERT INTO audit_events", {}, Exception("disk I/O error"))
        seqs = super().append_batch(records)
        now = time.monotonic()
        for record in records:
            self.committed_at[record.request_id] = now
        return seqs


def _record(request_id: str) -> AuditRecord:
    return AuditRecord(tenant_id="ten_a", key_id="k", actor="k", action="request.authorized",
                       endpoint="POST /v1/chat/completions", status=200, request_id=request_id)


def _check_request(api_key: str) -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "POST", "/v1/chat/completions"
    http.headers["authorization"] = f"Bearer {api_key}"
    http.headers["x-request-id"] = str(uuid.uuid4())
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    return request


class Auth:
    """Auth's request path in process: a key, the audit log on a ControlledStore, ext_authz and the servicer."""

    def __init__(self, database_url: str, **log_options) -> None:
        engine = auth_engine(database_url)
        self.store = ControlledStore(engine)
        self.log = AuditLog(self.store, **log_options)
        keys = key_store(engine, cache_seconds=60.0)
        tenant = keys.create_tenant("acme")
        _, self.api_key = keys.create_key(tenant.id, "app")
        self.authorizer = Authorizer(keys, self.log, ADMIN)
        self.ext_authz = ExtAuthzServicer(self.authorizer, SECRET)
        self.servicer = AuthServicer(keys, self.log, self.authorizer, ADMIN, SECRET)

    async def check(self) -> external_auth_pb2.CheckResponse:
        return await self.ext_authz.Check(_check_request(self.api_key), None)

    def actions(self) -> list[str]:
        with self.store._engine.connect() as conn:
            return [r[0] for r in conn.execute(sa.text("SELECT action FROM audit_events ORDER BY seq"))]

    async def close(self) -> None:
        self.store.failing = False
        self.store.open.set()
        await self.authorizer.close()
        await self.log.close()


@pytest.fixture
async def auth(database_url):
    auth = Auth(database_url)
    yield auth
    await auth.close()


def _denied_503(response: external_auth_pb2.CheckResponse) -> bool:
    return (response.status.code == code_pb2.UNAVAILABLE and response.denied_response.status.code == 503
            and b"service_unavailable" in response.denied_response.body.encode()
            and ("retry-after", "1") in [(h.header.key, h.header.value) for h in response.denied_response.headers])


async def test_written_behind_records_are_durable_within_the_bound(database_url):
    """The bound, on the real store (SQLite, the service's settings): 400 records handed over at about 400 per second,
    in small bursts as concurrent requests arrive. The guarantee, checked for every hand-over: a request went on
    before its record was durable only while no earlier record had waited longer than DURABILITY_BOUND uncommitted
    (past it, submit hands back a future to await). And what it costs: records share transactions, and are durable
    well within the bound (typically FLUSH_INTERVAL plus a few ms)."""
    store = ControlledStore(auth_engine(database_url))
    log = AuditLog(store)
    submitted: dict[str, float] = {}
    went_on: list[tuple[str, float]] = []  # written behind: the request went on at once
    for burst in range(100):
        for i in range(4):
            request_id = f"req-{burst}-{i}"
            submitted[request_id] = now = time.monotonic()
            if log.submit(_record(request_id)) is None:
                went_on.append((request_id, now))
        await asyncio.sleep(0.01)
    await log.flush()
    slack = 0.005  # the log reads its clock a moment after the test does
    for request_id, at in went_on:
        overdue = [r for r, t in submitted.items()
                   if t < at and store.committed_at[r] > at and at - t > DURABILITY_BOUND + slack]
        assert not overdue, f"{request_id} went on while {overdue[:3]} had waited longer than the bound"
    lags = sorted(store.committed_at[r] - t for r, t in submitted.items())
    commits = len(set(store.committed_at.values()))
    print(f"audit records durable after: median {statistics.median(lags) * 1000:.1f} ms, max {lags[-1] * 1000:.1f} ms "
          f"(bound {DURABILITY_BOUND * 1000:.0f} ms); {len(submitted)} records in {commits} transactions; "
          f"{len(submitted) - len(went_on)} requests waited for their record")
    within = sum(lag <= DURABILITY_BOUND for lag in lags) / len(lags)
    assert within >= 0.9 and statistics.median(lags) < DURABILITY_BOUND / 2  # a starved machine may stall a commit
    assert commits <= len(submitted) / 4  # they shared transactions: one per flush, not one per record
    assert store.verify().ok and store.verify().checked == len(submitted)
    await log.close()


async def test_behind_its_bound_requests_wait_for_their_own_record(auth):
    """A stalled store: the first request goes on (written behind); once a record has waited longer than the bound,
    a Check does not answer before its own record is committed, so no request goes on with its record in doubt for
    longer than the bound."""
    assert (await auth.check()).status.code == code_pb2.OK
    auth.store.open.clear()  # the database hangs
    await asyncio.sleep(FLUSH_INTERVAL + 0.01)  # the writer is now stuck in its commit
    assert (await auth.check()).status.code == code_pb2.OK  # still within the bound: written behind
    await asyncio.sleep(DURABILITY_BOUND)
    waiting = asyncio.create_task(auth.check())
    await asyncio.sleep(0.2)
    assert not waiting.done()  # behind its bound: this request waits for its record
    auth.store.open.set()
    response = await asyncio.wait_for(waiting, 5)
    assert response.status.code == code_pb2.OK
    assert len(auth.store.committed_at) == 3  # its record, and the two before it
    assert (await auth.check()).status.code == code_pb2.OK
    assert auth.log.submit(_record("next")) is None  # caught up: written behind again


async def test_a_failing_store_fails_closed_and_loses_no_record_it_let_through(auth):
    assert (await auth.check()).status.code == code_pb2.OK
    auth.store.failing = True
    # Accepted before the writer knows (the store fails at its next commit): its record must still land.
    assert (await auth.check()).status.code == code_pb2.OK
    deadline = time.monotonic() + 2
    while auth.log.refusal() is None:
        assert time.monotonic() < deadline, "the failure was not noticed"
        await asyncio.sleep(0.005)
    assert _denied_503(await auth.check())  # the store is down: a 503, never a pass
    with pytest.raises(ApiError) as e:  # the direct gRPC path (the router asks for its callers)
        await auth.servicer.Authenticate(auth_pb2.AuthenticateRequest(api_key=auth.api_key), Context())
    assert e.value.status == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(AuditUnavailable):  # an admin action's record, awaited: its caller answers UNAVAILABLE
        await auth.log.append(_record("admin"))
    auth.store.failing = False  # the store is back: the writer's retries (or its probe) notice without any traffic
    deadline = time.monotonic() + 5
    while auth.log.refusal() is not None or auth.log.pending:
        assert time.monotonic() < deadline, "did not recover"
        await asyncio.sleep(0.01)
    assert (await auth.check()).status.code == code_pb2.OK
    await auth.log.flush()
    # The two requests let through before the failure was known, and the one after: none lost, nothing else.
    assert auth.actions() == ["request.authorized"] * 3
    assert auth.store.verify().ok


async def test_a_full_backlog_fails_closed(database_url):
    auth = Auth(database_url, max_backlog=3, bound=60.0)
    try:
        auth.store.open.clear()
        for _ in range(3):
            assert (await auth.check()).status.code == code_pb2.OK
        assert _denied_503(await auth.check())
        auth.store.open.set()
        await auth.log.flush()
        assert (await auth.check()).status.code == code_pb2.OK
    finally:
        await auth.close()


async def test_shutdown_commits_what_was_written_behind(database_url):
    store = ControlledStore(auth_engine(database_url))
    log = AuditLog(store, flush_interval=30.0)  # nothing would be written for 30 s
    for i in range(5):
        assert log.submit(_record(f"req-{i}")) is None
    await asyncio.wait_for(log.close(), 5)
    assert sorted(store.committed_at) == [f"req-{i}" for i in range(5)]


async def test_denials_are_audited_too(auth):
    auth.api_key = "sk-llmaas-0123456789abcdef-wrong"
    response = await auth.check()
    assert response.denied_response.status.code == 401
    # Failed authentications are counted and written once per window (llmaas.auth.abuse): hand them over now.
    auth.authorizer.flush_failures()
    await auth.log.flush()
    assert auth.actions() == ["request.denied"]


async def test_lingering_completion_records_share_the_next_rounds_transaction(database_url):
    """The router's batched completion records (RecordRequests) are awaited but not urgent: they wait for the
    writer's next round (within FLUSH_INTERVAL) and commit in one transaction with the authorisation records
    written behind meanwhile, instead of one transaction per call; still durable when the call returns."""
    store = ControlledStore(auth_engine(database_url))
    log = AuditLog(store)
    t0 = time.monotonic()
    assert log.submit(_record("authorized-1")) is None
    completed = [AuditRecord(tenant_id="ten_a", key_id="k", actor="k", action="request.completed",
                             endpoint="POST /v1/chat/completions", status=200, request_id=f"done-{i}")
                 for i in range(3)]
    seqs = await asyncio.gather(*(log.append_many([r], linger=True) for r in completed))
    took = time.monotonic() - t0
    assert all(s[0] is not None for s in seqs)
    assert len({store.committed_at[r] for r in ["authorized-1", "done-0", "done-1", "done-2"]}) == 1
    assert took <= FLUSH_INTERVAL + 0.5  # within the round (plus a starved machine's commit)
    # An urgent append (an admin action) still commits at once, with whatever is queued.
    assert log.submit(_record("authorized-2")) is None
    await log.append(_record("admin-1"))
    assert store.committed_at["authorized-2"] == store.committed_at["admin-1"]
    assert store.verify().ok
    await log.close()
