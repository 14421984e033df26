"""Failed authentications are cheap to refuse (llmaas.auth.abuse): a failure budget per client address that valid
keys never touch, bounded memory whatever the addresses, and one audit record per address, reason and window that
carries the count, in a chain that still verifies."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest
import sqlalchemy as sa
from envoy.service.auth.v3 import external_auth_pb2
from google.rpc import code_pb2
from llmaas.auth.abuse import OVERFLOW, DenialTally, FailureLimiter, bucket_of, client_host
from llmaas.auth.audit import AuditLog, AuditRecord, AuditStore, canonical, chain_hash
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.ext_authz import ExtAuthzServicer

from tests.support.auth_store import SECRET, auth_engine, key_store

ADMIN = "admin-token-for-tests"


class FakeClock:
    """A monotonic clock the test moves (unit tests only)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# The limiter


def test_a_burst_of_failures_then_the_rate():
    clock = FakeClock()
    limiter = FailureLimiter(rate=10.0, burst=5, clock=clock)
    assert [limiter.take("10.0.0.1") for _ in range(5)] == [0.0] * 5
    wait = limiter.take("10.0.0.1")
    assert wait == pytest.approx(0.1)
    # Refused attempts draw nothing: hammering does not push the next allowed failure further away.
    for _ in range(100):
        assert limiter.take("10.0.0.1") == pytest.approx(0.1)
    clock.now += 0.1
    assert limiter.take("10.0.0.1") == 0.0
    assert limiter.take("10.0.0.1") > 0
    # Another address has its own budget; a refilled one has the whole burst again.
    assert limiter.take("10.0.0.2") == 0.0
    clock.now += 0.5
    assert [limiter.take("10.0.0.1") for _ in range(5)] == [0.0] * 5


def test_ipv6_addresses_share_a_bucket_per_64():
    assert bucket_of("2001:db8:1:2:aaaa::1") == bucket_of("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert bucket_of("2001:db8:1:3::1") != bucket_of("2001:db8:1:2::1")
    assert bucket_of("::ffff:192.0.2.7") == "192.0.2.7"
    assert bucket_of("192.0.2.7") == "192.0.2.7"
    assert bucket_of("not-an-address:") == "not-an-address:"
    # gRPC peers (direct callers): the port is not part of the address.
    assert bucket_of("ipv4:192.0.2.7:51234") == "192.0.2.7"
    assert bucket_of("ipv6:[2001:db8:1:2::9]:51234") == bucket_of("ipv6:%5B2001:db8:1:2::7%5D:1") == "2001:db8:1:2::/64"
    limiter = FailureLimiter(rate=1.0, burst=2, clock=FakeClock())
    assert limiter.take("2001:db8::1") == limiter.take("2001:db8::2") == 0.0
    assert limiter.take("2001:db8::3") > 0


async def test_direct_callers_are_counted_by_host_not_by_connection(auth):
    for port in range(40000, 40012):
        await auth.check("garbage", address=f"ipv4:192.0.2.7:{port}")
    rows = await auth.committed()
    assert {(r["client_address"], r["status"]): r["count"] for r in rows} == {("192.0.2.7", 401): 5,
                                                                              ("192.0.2.7", 429): 7}
    assert client_host("ipv6:[::1]:5") == "::1" and client_host("10.0.0.1") == "10.0.0.1"


def test_memory_is_bounded_whatever_the_addresses():
    clock = FakeClock()
    limiter = FailureLimiter(rate=10.0, burst=3, max_addresses=100, clock=clock)
    refused = sum(limiter.take(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}") > 0 for i in range(20_000))
    assert len(limiter) == 100
    # Past the table, the new addresses share one overflow bucket: rotating addresses buys 3 failures, not 19,900.
    assert refused == 20_000 - 100 - 3
    # Buckets that have refilled are forgotten to make room: new addresses get their own again.
    clock.now += 1.0
    assert [limiter.take("192.0.2.1") for _ in range(3)] == [0.0] * 3
    assert len(limiter) == 1


# Through ext_authz and the audit trail


def _check(api_key: str | None, address: str = "127.0.0.1") -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/v1/models"
    if api_key is not None:
        http.headers["authorization"] = f"Bearer {api_key}"
    http.headers["x-request-id"] = str(uuid.uuid4())
    request.attributes.source.address.socket_address.address = address
    return request


class Auth:
    """ext_authz over the real key store and audit log (SQLite), with a small failure budget."""

    def __init__(self, database_url: str, *, burst: int = 5, window: float = 60.0, tallied_addresses: int = 1000):
        engine = auth_engine(database_url)
        self.engine = engine
        self.log = AuditLog(AuditStore(engine))
        keys = key_store(engine, cache_seconds=60.0)
        tenant = keys.create_tenant("acme")
        _, self.api_key = keys.create_key(tenant.id, "app")
        self.clock = FakeClock()
        self.authorizer = Authorizer(keys, self.log, ADMIN, limiter=FailureLimiter(10.0, burst, clock=self.clock),
                                     tally=DenialTally(self.log, window, tallied_addresses))
        self.ext_authz = ExtAuthzServicer(self.authorizer, SECRET)

    async def check(self, api_key: str | None, address: str = "127.0.0.1") -> external_auth_pb2.CheckResponse:
        return await self.ext_authz.Check(_check(api_key, address), None)

    async def committed(self) -> list[dict]:
        self.authorizer.flush_failures()
        await self.log.flush()
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(sa.text(
                "SELECT action, status, client_address, detail, count FROM audit_events ORDER BY seq"))]

    async def close(self) -> None:
        await self.authorizer.close()
        await self.log.close()


@pytest.fixture
async def auth(database_url):
    auth = Auth(database_url)
    yield auth
    await auth.close()


def _status(response: external_auth_pb2.CheckResponse) -> int:
    return 200 if response.status.code == code_pb2.OK else response.denied_response.status.code


async def test_past_the_budget_429_and_a_valid_key_from_the_same_address_is_served(auth):
    bad = "sk-llmaas-0123456789abcdef-wrong"
    statuses = [_status(await auth.check(bad)) for _ in range(12)]
    assert statuses == [401] * 5 + [429] * 7
    refused = await auth.check(bad)
    assert refused.status.code == code_pb2.RESOURCE_EXHAUSTED
    headers = {h.header.key: h.header.value for h in refused.denied_response.headers}
    assert headers["retry-after"] == "1" and headers["content-type"] == "application/json"
    error = json.loads(refused.denied_response.body)["error"]
    assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error"
    assert set(error) == {"message", "type", "param", "code"}
    # Only failures draw from the budget: the address's valid key is served, again and again.
    assert [_status(await auth.check(auth.api_key)) for _ in range(20)] == [200] * 20
    # Missing keys, unknown ones, malformed ones: all failures of the same address.
    assert _status(await auth.check(None)) == 429
    assert _status(await auth.check("garbage")) == 429
    assert _status(await auth.check(bad, address="192.0.2.9")) == 401


async def test_failures_are_audited_as_counts_and_the_chain_verifies(auth):
    bad = "sk-llmaas-0123456789abcdef-wrong"
    for _ in range(200):
        await auth.check(bad)
    for _ in range(3):
        await auth.check(None, address="192.0.2.9")
    await auth.check(auth.api_key)
    rows = await auth.committed()
    denied = {(r["client_address"], r["detail"], r["status"]): r["count"] for r in rows
              if r["action"] == "request.denied"}
    assert denied == {("127.0.0.1", "invalid_api_key", 401): 5, ("127.0.0.1", "invalid_api_key", 429): 195,
                      ("192.0.2.9", "missing_api_key", 401): 3}
    assert [r["count"] for r in rows if r["action"] == "request.authorized"] == [1]
    assert len(rows) == 4  # 204 requests
    assert auth.log.store.verify().ok


async def test_a_count_is_covered_by_the_hash(auth):
    for _ in range(7):
        await auth.check("sk-llmaas-0123456789abcdef-wrong")
    await auth.committed()
    assert auth.log.store.verify().ok
    with auth.engine.begin() as conn:
        conn.execute(sa.text("UPDATE audit_events SET count = 1 WHERE status = 429"))
    report = auth.log.store.verify()
    assert not report.ok and report.first_bad_seq == 2


def test_records_that_stand_for_one_request_keep_their_hashes():
    """Chains written before `count` existed still verify: a count of 1 is not in the hashed bytes."""
    record = AuditRecord(tenant_id="t", key_id="k", actor="k", action="request.authorized", status=200)
    assert b"count" not in canonical(1, record)
    assert chain_hash("0" * 64, 1, record) != chain_hash("0" * 64, 1, AuditRecord(**{**vars(record), "count": 2}))


async def test_the_tally_is_bounded_per_window(database_url):
    auth = Auth(database_url, burst=1000, tallied_addresses=10)
    try:
        for i in range(50):
            for _ in range(2):
                await auth.check(None, address=f"198.51.100.{i}")
        rows = await auth.committed()
        counts = {r["client_address"]: r["count"] for r in rows}
        assert len(counts) == 11 and counts[OVERFLOW] == 80 and sum(counts.values()) == 100
        assert auth.log.store.verify().ok
    finally:
        await auth.close()


async def test_counts_are_written_every_window_without_anyone_waiting(database_url):
    auth = Auth(database_url, window=0.05)
    try:
        for _ in range(3):
            await auth.check(None)
        await asyncio.sleep(0.3)  # the window, the writer's linger and a commit
        with auth.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT detail, count FROM audit_events")).all() == [("missing_api_key", 3)]
    finally:
        await auth.close()


async def test_shutdown_writes_what_was_counted(database_url):
    auth = Auth(database_url)
    await auth.check("garbage")
    await auth.close()
    with auth.engine.connect() as conn:
        assert conn.execute(sa.text("SELECT detail, count FROM audit_events")).all() == [("invalid_api_key", 1)]
