import datetime as dt
from pathlib import Path

import grpc
import pytest
from llmaas.common.db import make_engine, migrate
from llmaas.common.errors import ApiError, from_rpc_error
from llmaas.common.identity import Identity, encode_identity
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.headers import duration
from llmaas.metering.ledger import Ledger
from llmaas.metering.pricing import load_prices
from llmaas.metering.servicer import MeteringServicer
from llmaas.metering.tiers import load_tiers
from llmaas.metering.v1 import metering_pb2
from llmaas.stack.paths import DEPLOY_DIR

from tests.unit.test_errors import FakeRpcError

ADMIN = "admin-token-for-tests"
SECRET = "s" * 32
NOW = dt.datetime(2026, 11, 23, 15, 4, 5, tzinfo=dt.UTC)


class Context:
    def __init__(self, token: str = ADMIN):
        self._md = (("authorization", f"Bearer {token}"),)

    def invocation_metadata(self):
        return self._md


@pytest.fixture
def servicer(tmp_path: Path) -> MeteringServicer:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine, Path(ledger_mod.__file__).parent / "migrations")
    ledger = Ledger(engine, load_prices(DEPLOY_DIR / "metering" / "prices.yaml"),
                    load_tiers(DEPLOY_DIR / "metering" / "tiers.yaml"))
    return MeteringServicer(ledger, ADMIN, SECRET, clock=lambda: NOW)


def _settle(rid: str, *, signed_for: str | None = None, **kw) -> metering_pb2.SettleRequest:
    """A SettleBatch item with its request's signed identity (bound to `signed_for`, by default its own id)."""
    identity = encode_identity(Identity("t", "k"), SECRET, request_id=rid if signed_for is None else signed_for)
    return metering_pb2.SettleRequest(request_id=rid, identity=identity, **kw)


def _reserve(rid: str, **kw) -> metering_pb2.ReserveRequest:
    return metering_pb2.ReserveRequest(
        request_id=rid, tenant_id="t", key_id="k", model="m", max_input_tokens=100, max_output_tokens=50,
        quotas=[metering_pb2.Quota(window_seconds=60, max_requests=3, max_tokens=10_000)], **kw)


async def test_remaining_decreases_then_429_with_retry_after(servicer: MeteringServicer):
    remaining = []
    for i in range(3):
        resp = await servicer.Reserve(_reserve(f"r{i}"), Context())
        headers = {h.name: h.value for h in resp.headers}
        remaining.append(int(headers["x-ratelimit-remaining-requests"]))
        assert headers["x-ratelimit-limit-requests"] == "3" and headers["x-ratelimit-reset-requests"] == "55s"
        assert headers["x-ratelimit-limit-tokens"] == "10000"
    assert remaining == [2, 1, 0]
    with pytest.raises(ApiError) as refused:
        await servicer.Reserve(_reserve("r3"), Context())
    err = refused.value
    assert err.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert err.body()["error"]["type"] == "rate_limit_error" and err.body()["error"]["code"] == "rate_limit_exceeded"
    headers = dict(err.headers)
    assert headers["retry-after"] == "55" and headers["x-ratelimit-remaining-requests"] == "0"
    # The headers survive the hop to the router, which raises the same error to Envoy.
    again = from_rpc_error(FakeRpcError(err.status, err.trailing_metadata()), service="metering")
    assert dict(again.headers) == headers and again.code == "rate_limit_exceeded"


async def test_settle_prices_the_real_usage_once(servicer: MeteringServicer):
    await servicer.Reserve(_reserve("r1", kwh_per_million_tokens=6.32), Context())
    settle = metering_pb2.SettleRequest(request_id="r1", prompt_tokens=15, completion_tokens=42, outcome="completed")
    first = await servicer.Settle(settle, Context())
    assert first.recorded and first.cost_eur == "0.000363000"  # 15 * 1.8 + 42 * 8 per million
    assert not (await servicer.Settle(settle, Context())).recorded
    usage = await servicer.GetUsage(metering_pb2.GetUsageRequest(tenant_id="t", group_by=["model", "day"]), Context())
    assert usage.total.cost_eur == "0.000363000" and usage.total.total_tokens == 57
    assert usage.total.energy_kwh == "0.000360240"  # 57 tokens * 6.32 kWh per million
    assert [(r.model, r.day) for r in usage.rows] == [("m", "2026-11-23")]


async def test_tiers_are_admin_assigned(servicer: MeteringServicer):
    listed = await servicer.ListTiers(metering_pb2.ListTiersRequest(), Context())
    assert listed.default_tier == "tier1" and [t.id for t in listed.tiers][:2] == ["tier1", "tier2"]
    got = await servicer.GetTenantTier(metering_pb2.GetTenantTierRequest(tenant_id="t"), Context())
    assert not got.assigned and got.tier.monthly_budget_eur == "1000.000000000"
    await servicer.SetTenantTier(metering_pb2.SetTenantTierRequest(tenant_id="t", tier="tier2",
                                                                   monthly_budget_eur="0.01"), Context())
    got = await servicer.GetTenantTier(metering_pb2.GetTenantTierRequest(tenant_id="t"), Context())
    assert got.assigned and got.tier.id == "tier2" and got.tier.monthly_budget_eur == "0.010000000"
    with pytest.raises(ApiError):
        await servicer.SetTenantTier(metering_pb2.SetTenantTierRequest(tenant_id="t", tier="gold"), Context())
    with pytest.raises(ApiError) as denied:
        await servicer.SetTenantTier(metering_pb2.SetTenantTierRequest(tenant_id="t", tier="tier4"), Context("x"))
    assert denied.value.status == grpc.StatusCode.UNAUTHENTICATED
    prices = await servicer.ListPrices(metering_pb2.ListPricesRequest(), Context())
    assert (prices.prices[0].input, prices.prices[0].batch_input, prices.prices[0].audio_minute) == ("1.8", "0.9",
                                                                                                    "0.01")


def test_reset_durations_in_openai_format():
    assert [duration(s) for s in (0, 0.2, 59, 60, 360, 3723)] == ["0s", "1s", "59s", "1m0s", "6m0s", "1h2m3s"]


async def test_settle_batch_answers_each_item_as_settle_would(servicer: MeteringServicer):
    for rid in ("a", "b"):
        await servicer.Reserve(_reserve(rid), Context())
    items = [_settle("a", prompt_tokens=15, completion_tokens=42, outcome="completed"),
             _settle("nope", prompt_tokens=1, outcome="failed"),
             _settle("b", outcome="exploded"),
             _settle("a", prompt_tokens=99, outcome="completed"),
             _settle("b", prompt_tokens=10**9, completion_tokens=1, outcome="failed"),
             # Refused alone: an identity bound to another request, and none at all.
             _settle("b", signed_for="a", outcome="completed"),
             metering_pb2.SettleRequest(request_id="b", outcome="completed")]
    response = await servicer.SettleBatch(metering_pb2.SettleBatchRequest(items=items), Context())
    r = response.results
    assert [x.request_id for x in r] == ["a", "nope", "b", "a", "b", "b", "b"]
    assert r[5].error_code == r[6].error_code == "invalid_identity" and not r[5].HasField("settlement")
    assert r[0].settlement.recorded and r[0].settlement.cost_eur == "0.000363000" and not r[0].error_code
    assert r[1].error_code == "reservation_not_found" and not r[1].HasField("settlement")
    assert r[2].error_code == "invalid_request"
    assert r[3].HasField("settlement") and not r[3].settlement.recorded  # settled by the first "a"
    assert r[4].settlement.capped and r[4].settlement.refused_prompt_tokens == 10**9 - 100
    # Settle is the same code: a settled id stays settled, an unknown one is NOT_FOUND.
    again = metering_pb2.SettleRequest(request_id="b", outcome="completed")
    assert not (await servicer.Settle(again, Context())).recorded
    with pytest.raises(ApiError) as missing:
        await servicer.Settle(metering_pb2.SettleRequest(request_id="nope", outcome="failed"), Context())
    assert missing.value.status == grpc.StatusCode.NOT_FOUND


async def test_settle_batch_is_unavailable_while_the_ledger_is(servicer: MeteringServicer, monkeypatch):
    """A database that cannot be written (locked, unreachable) fails the call UNAVAILABLE: the router's batcher and
    gRPC retry it (idempotent), instead of dropping settlements as a final error."""
    await servicer.Reserve(_reserve("r1"), Context())

    def locked(self, ids, now):
        raise servicer._ledger.unavailable("database is locked")

    monkeypatch.setattr(ledger_mod.hot_sql.Tx, "claim", locked)
    batch = metering_pb2.SettleBatchRequest(items=[_settle("r1", outcome="completed")])
    with pytest.raises(ApiError) as unavailable:
        await servicer.SettleBatch(batch, Context())
    assert unavailable.value.status == grpc.StatusCode.UNAVAILABLE
    monkeypatch.undo()
    assert (await servicer.SettleBatch(batch, Context())).results[0].settlement.recorded
