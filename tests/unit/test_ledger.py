import datetime as dt
import threading
from decimal import Decimal
from pathlib import Path

import pytest
from llmaas.common.db import make_engine, migrate
from llmaas.common.identity import Quota
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.ledger import Ledger, Reservation, SettleItem, Settlement, UnknownReservation
from llmaas.metering.pricing import Usage, load_prices
from llmaas.metering.tiers import load_tiers
from llmaas.stack.paths import DEPLOY_DIR

MIGRATIONS = Path(ledger_mod.__file__).parent / "migrations"
PRICES = load_prices(DEPLOY_DIR / "metering" / "prices.yaml")
TIERS = load_tiers(DEPLOY_DIR / "metering" / "tiers.yaml")
NOW = dt.datetime(2026, 11, 23, 15, 4, 5, tzinfo=dt.UTC)


def _ledger(url: str) -> Ledger:
    engine = make_engine(url)
    migrate(engine, MIGRATIONS)
    return Ledger(engine, PRICES, TIERS)


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    led = _ledger(database_url)
    migrate(led._engine, MIGRATIONS)  # idempotent at start
    return led


def _r(request_id: str, tenant="t", key="k", max_in=100, max_out=50, **kw) -> Reservation:
    return Reservation(request_id, tenant, key, kw.pop("model", "m"), max_in, max_out, **kw)


def test_settlement_is_idempotent_by_request_id(ledger: Ledger):
    assert ledger.reserve(_r("r1"), NOW).granted
    assert ledger.settle("r1", Usage(10, 5), "completed", NOW).recorded is True
    assert ledger.settle("r1", Usage(99, 99), "completed", NOW).recorded is False  # a retried hand-off: no change
    ledger.reserve(_r("r2", key="k2"), NOW)
    ledger.settle("r2", Usage(1, 2), "cancelled", NOW)
    t = ledger.totals("t")
    # `requests` counts the served ones; the cancelled one is counted apart, its tokens billed.
    assert (t.requests, t.prompt_tokens, t.completion_tokens) == (1, 11, 7)
    assert ledger.usage(tenant_id="t")[0].cancelled_requests == 1
    assert ledger.totals("t", "k2").completion_tokens == 2
    assert ledger.totals("other").requests == 0


def test_unreserved_settlement_is_an_error(ledger: Ledger):
    with pytest.raises(UnknownReservation):
        ledger.settle("nope", Usage(1, 1), "completed", NOW)


def test_a_retried_reserve_charges_once(ledger: Ledger):
    quota = (Quota(60, max_requests=5),)
    first = ledger.reserve(_r("r1", quotas=quota), NOW)
    again = ledger.reserve(_r("r1", quotas=quota), NOW)
    assert again.granted and again.replay
    key_window = next(w for w in again.windows if w.limit.scope.startswith("key:"))
    assert key_window.requests == 1 and first.windows == again.windows


def test_refusal_charges_nothing_and_names_the_window(ledger: Ledger):
    quota = (Quota(60, max_tokens=400),)
    assert ledger.reserve(_r("a", quotas=quota), NOW).granted  # 150 worst case
    assert ledger.reserve(_r("b", quotas=quota), NOW).granted  # 300
    refused = ledger.reserve(_r("c", quotas=quota), NOW)
    assert not refused.granted and refused.exhausted == "tokens"
    assert refused.refused_by.limit.scope == "key:k:60s" and refused.refused_by.tokens == 300
    with pytest.raises(UnknownReservation):  # no ledger row either
        ledger.settle("c", Usage(), "failed", NOW)
    # Settlement releases the unused part of the reservation: room again.
    ledger.settle("a", Usage(20, 10), "completed", NOW)
    assert ledger.reserve(_r("d", quotas=quota), NOW).granted


def test_request_quota_and_release_on_failure(ledger: Ledger):
    quota = (Quota(60, max_requests=2),)
    assert ledger.reserve(_r("a", quotas=quota), NOW).granted
    assert ledger.reserve(_r("b", quotas=quota), NOW).granted
    refused = ledger.reserve(_r("c", quotas=quota), NOW)
    assert refused.exhausted == "requests"
    ledger.settle("a", Usage(), "failed", NOW)  # nothing used: the request slot comes back
    assert ledger.reserve(_r("c2", quotas=quota), NOW).granted
    # A new slot starts from zero.
    assert ledger.reserve(_r("e", quotas=quota), NOW + dt.timedelta(seconds=60)).granted


def test_tier_output_tokens_per_hour(ledger: Ledger):
    # Tier 1: 150 000 output tokens per hour.
    assert ledger.reserve(_r("a", max_out=100_000), NOW).granted
    refused = ledger.reserve(_r("b", max_out=60_000), NOW)
    assert not refused.granted and refused.exhausted == "output_tokens"
    assert refused.refused_by.limit.scope == "tenant:t:hour"
    ledger.settle("a", Usage(10, 1000), "completed", NOW)
    assert ledger.reserve(_r("b2", max_out=60_000), NOW).granted


def test_budget_is_never_overshot_and_spend_is_exact(ledger: Ledger):
    budget = 1_000_000  # 0.001 EUR
    ledger.set_tenant_tier("t", "tier1", budget, NOW)
    tier, assigned = ledger.tenant_tier("t")
    assert assigned and tier.monthly_budget_nano == budget
    granted = 0
    for i in range(50):
        d = ledger.reserve(_r(f"r{i}", max_in=100, max_out=50), NOW)  # worst 580 000 nEUR
        if d.granted:
            granted += 1
            ledger.settle(f"r{i}", Usage(40, 20), "completed", NOW)  # 232 000 nEUR
        else:
            assert d.exhausted == "budget"
    spent = ledger.usage(tenant_id="t")[0].cost_nano
    # 2 * 232 000 spent + a 580 000 worst case would pass the budget: the third is refused.
    assert granted == 2 and spent == 2 * 232_000 <= budget


def test_concurrent_replicas_never_overshoot(database_url: str):
    """Two 'replicas' (engines) on one database, 16 threads racing for a 1 000-token key quota."""
    replicas = [_ledger(database_url), _ledger(database_url)]
    quota = (Quota(3600, max_tokens=1000),)
    granted: list[str] = []
    lock = threading.Lock()

    def worker(n: int):
        led = replicas[n % 2]
        for i in range(10):
            rid = f"w{n}-{i}"
            if led.reserve(_r(rid, quotas=quota), NOW).granted:  # 150 tokens worst case
                with lock:
                    granted.append(rid)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(granted) == 1000 // 150
    window = next(w for w in replicas[0].reserve(_r("probe", quotas=quota), NOW).windows
                  if w.limit.scope.startswith("key:"))
    assert window.tokens == 150 * len(granted)


def test_usage_groups_add_up_exactly(ledger: Ledger):
    days = [NOW, NOW + dt.timedelta(days=1), NOW + dt.timedelta(days=9)]
    n = 0
    for day in days:
        for key in ("k1", "k2"):
            for model in ("m1", "m2"):
                n += 1
                rid = f"{n}"
                ledger.reserve(_r(rid, key=key, model=model, kwh_per_million=Decimal("6.32")), day)
                ledger.settle(rid, Usage(n * 7, n * 3, reasoning_tokens=n), "completed", day)
    total = ledger.usage(tenant_id="t")[0]
    assert total.requests == 12
    for group in (("day",), ("month",), ("key",), ("model",), ("day", "key", "model")):
        rows = ledger.usage(tenant_id="t", group_by=group)
        assert sum(r.cost_nano for r in rows) == total.cost_nano
        assert sum(r.energy_uwh for r in rows) == total.energy_uwh
        assert sum(r.reasoning_tokens for r in rows) == total.reasoning_tokens
    by_day = ledger.usage(tenant_id="t", group_by=("day",))
    assert [r.group["day"] for r in by_day] == ["2026-11-23", "2026-11-24", "2026-12-02"]
    november = ledger.usage(tenant_id="t", start_day="2026-11-01", end_day="2026-11-30")[0]
    assert november.requests == 8
    assert total.energy_uwh == sum(6320 * n * 10 for n in range(1, 13))  # 6.32 kWh/M = 6320 uWh per token


def test_expired_reservations_release_their_charge(ledger: Ledger):
    quota = (Quota(3600, max_tokens=200),)
    assert ledger.reserve(_r("lost", quotas=quota), NOW).granted
    assert not ledger.reserve(_r("next", quotas=quota), NOW).granted
    assert ledger.expire(NOW + dt.timedelta(seconds=1), NOW) == 1
    assert ledger.reserve(_r("next2", quotas=quota), NOW).granted
    assert ledger.usage(tenant_id="t")[0].cost_nano == 0


def test_a_settlement_never_exceeds_its_reservation(ledger: Ledger):
    """Settle with 10^9 tokens after a Reserve of 10: recorded at the reservation, the excess refused."""
    quota = (Quota(3600, max_tokens=100),)
    assert ledger.reserve(_r("small", max_in=6, max_out=4, quotas=quota), NOW).granted
    s = ledger.settle("small", Usage(10**9, 10**9, reasoning_tokens=10**9), "completed", NOW)
    assert s.recorded and s.capped
    assert (s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.reasoning_tokens) == (6, 4, 4)
    assert (s.excess.prompt_tokens, s.excess.completion_tokens) == (10**9 - 6, 10**9 - 4)
    reserved_cost = 6 * 1800 + 4 * 8000  # nEUR: 1.8 and 8 EUR per million tokens
    assert s.cost_nano <= reserved_cost
    total = ledger.usage(tenant_id="t")[0]
    assert (total.requests, total.prompt_tokens, total.completion_tokens) == (1, 6, 4)
    # The windows hold the capped usage: the tenant is not locked out by a claim it never reserved.
    assert ledger.reserve(_r("next", max_in=40, max_out=40, quotas=quota), NOW).granted
    within = ledger.reserve(_r("within", max_in=50, max_out=50), NOW)
    assert within.granted
    s = ledger.settle("within", Usage(50, 50), "completed", NOW)
    assert not s.capped and s.excess == Usage()


def test_usage_counts_served_failed_cancelled_and_expired_apart(ledger: Ledger):
    for i, outcome in enumerate(["completed", "completed", "failed", "cancelled", "failed"]):
        ledger.reserve(_r(f"o{i}", key="k1" if i < 3 else "k2"), NOW)
        ledger.settle(f"o{i}", Usage(3, 1 if outcome != "failed" else 0), outcome, NOW)
    ledger.reserve(_r("lost"), NOW)
    assert ledger.expire(NOW + dt.timedelta(seconds=1), NOW) == 1
    total = ledger.usage(tenant_id="t")[0]
    assert (total.requests, total.failed_requests, total.cancelled_requests, total.expired_requests) == (2, 2, 1, 1)
    assert total.prompt_tokens == 15  # work done by failed and cancelled requests is billed
    by_key = {r.group["key"]: r for r in ledger.usage(tenant_id="t", group_by=("key",))}
    assert (by_key["k1"].requests, by_key["k1"].failed_requests) == (2, 1)
    assert (by_key["k2"].failed_requests, by_key["k2"].cancelled_requests) == (1, 1)
    assert ledger.totals("t").requests == 2


# --- rounds: many reservations or settlements in one transaction (group commit, SettleBatch) ----------------------


def test_a_round_decides_in_order_exactly_as_one_after_another(ledger: Ledger):
    """The same reservations, in one round for key k1 and one after another for key k2: the same decisions and the
    same counters. The 3rd does not fit, the 4th (smaller) still does: a refusal charges nothing."""
    quota = (Quota(60, max_tokens=400),)
    sizes = [(100, 50), (100, 50), (100, 50), (50, 50), (1, 1)]  # 150, 300, (450: refused), 400, (402: refused)
    one_by_one = [ledger.reserve(_r(f"s{i}", key="k2", max_in=a, max_out=b, quotas=quota), NOW)
                  for i, (a, b) in enumerate(sizes)]
    in_a_round = ledger.reserve_many([(_r(f"b{i}", key="k1", max_in=a, max_out=b, quotas=quota), NOW)
                                      for i, (a, b) in enumerate(sizes)])
    assert [d.granted for d in in_a_round] == [d.granted for d in one_by_one] == [True, True, False, True, False]

    def keyed(d):
        return [(w.limit.scope.replace("k1", "k"), w.requests, w.tokens) for w in d.windows if "key:" in w.limit.scope]

    assert [keyed(d) for d in in_a_round] == [[(s.replace("k2", "k"), r, t) for s, r, t in keyed(d)]
                                               for d in one_by_one]
    assert in_a_round[2].exhausted == "tokens" and in_a_round[2].refused_by.tokens == 300
    with pytest.raises(UnknownReservation):  # a refused reservation leaves no ledger row
        ledger.settle("b2", Usage(), "failed", NOW)
    assert ledger.settle("b3", Usage(1, 1), "completed", NOW).recorded


def test_a_repeated_request_id_in_a_round_is_a_replay(ledger: Ledger):
    quota = (Quota(60, max_requests=10),)
    assert ledger.reserve(_r("before", quotas=quota), NOW).granted
    decisions = ledger.reserve_many([(_r("x", quotas=quota), NOW), (_r("before", quotas=quota), NOW),
                                     (_r("x", quotas=quota), NOW)])
    assert [(d.granted, d.replay) for d in decisions] == [(True, False), (True, True), (True, True)]
    key_window = next(w for w in decisions[2].windows if w.limit.scope.startswith("key:"))
    assert key_window.requests == 2  # "before" and "x", once each


def test_a_refused_first_try_lets_a_repeated_id_in_the_same_round_try_again(ledger: Ledger):
    quota = (Quota(60, max_tokens=200),)
    decisions = ledger.reserve_many([(_r("x", max_in=200, quotas=quota), NOW), (_r("x", max_in=10, quotas=quota), NOW)])
    assert [(d.granted, d.replay) for d in decisions] == [(False, False), (True, False)]


def test_settlements_in_one_round_each_as_alone(ledger: Ledger):
    quota = (Quota(3600, max_tokens=1000),)
    for rid in ("a", "b", "done"):
        assert ledger.reserve(_r(rid, quotas=quota), NOW).granted  # 150 each
    ledger.settle("done", Usage(1, 1), "completed", NOW)
    results = ledger.settle_many([SettleItem("a", Usage(10, 5), "completed"), SettleItem("nope", Usage(1, 1), "failed"),
                                  SettleItem("a", Usage(99, 9), "completed"), SettleItem("done", Usage(5, 5), "failed"),
                                  SettleItem("b", Usage(), "cancelled")], NOW)
    assert [type(r).__name__ for r in results] == ["Settlement", "UnknownReservation", "Settlement", "Settlement",
                                                   "Settlement"]
    assert [r.recorded for r in results if isinstance(r, Settlement)] == [True, False, False, True]
    assert results[0].usage == Usage(10, 5)  # the first occurrence settles; the repeat finds it settled
    t = ledger.totals("t")
    assert (t.requests, t.prompt_tokens, t.completion_tokens) == (2, 11, 6)
    # Each window corrected once: 15 + 2 tokens used, b gave everything back.
    probe = ledger.reserve(_r("probe", max_in=1, max_out=1, quotas=quota), NOW)
    assert next(w for w in probe.windows if w.limit.scope.startswith("key:")).tokens == 15 + 2 + 2


def test_one_bad_reservation_never_fails_the_others(ledger: Ledger):
    """A value the database refuses (2^64 does not fit a BIGINT) fails its own reservation only."""
    decisions = ledger.reserve_many([(_r("ok1"), NOW), (_r("bad", max_in=2**64), NOW), (_r("ok2"), NOW)])
    assert decisions[0].granted and decisions[2].granted and isinstance(decisions[1], Exception)
    assert ledger.settle("ok1", Usage(1, 1), "completed", NOW).recorded
    assert ledger.settle("ok2", Usage(1, 1), "completed", NOW).recorded
    with pytest.raises(UnknownReservation):
        ledger.settle("bad", Usage(), "failed", NOW)


def test_one_bad_settlement_never_fails_the_others(ledger: Ledger, monkeypatch):
    for rid in ("a", "bad", "b"):
        ledger.reserve(_r(rid), NOW)
    real_cost = ledger_mod.cost_nano

    def cost(prices, kind, used):
        if used.prompt_tokens == 13:
            raise ValueError("a price the table cannot compute")
        return real_cost(prices, kind, used)

    monkeypatch.setattr(ledger_mod, "cost_nano", cost)
    results = ledger.settle_many([SettleItem("a", Usage(1, 1), "completed"), SettleItem("bad", Usage(13, 1),
                                                                                         "completed"),
                                  SettleItem("b", Usage(2, 2), "completed")], NOW)
    assert results[0].recorded and results[2].recorded and isinstance(results[1], ValueError)
    assert ledger.settle("bad", Usage(12, 1), "completed", NOW).recorded  # untouched by the failed round


def test_a_database_failure_fails_the_round_once_not_item_by_item(ledger: Ledger, monkeypatch):
    """Locked past its timeout, unreachable: every item gets the error at once (replaying them one by one would
    wait out the timeout once per item)."""
    calls = []

    def claim(self, ids, now):
        calls.append(ids)
        raise ledger.unavailable("database is locked")

    monkeypatch.setattr(ledger_mod.hot_sql.Tx, "claim", claim)
    results = ledger.settle_many([SettleItem(f"r{i}", Usage(), "failed") for i in range(5)], NOW)
    assert len(calls) == 1 and all(isinstance(r, ledger.unavailable) for r in results)


def test_reservations_are_committed_by_the_time_reserve_returns(ledger: Ledger):
    """The durability half of 'every served request is in the ledger after a SIGKILL': another connection (another
    process, as after a restart) sees the row as soon as reserve returns."""
    assert ledger.reserve(_r("durable"), NOW).granted
    other = _ledger(str(ledger._engine.url.render_as_string(hide_password=False)))
    assert other.settle("durable", Usage(1, 1), "completed", NOW).recorded


def test_replicas_reserving_and_settling_in_rounds_never_overshoot(database_url: str):
    """Two 'replicas' on one database, 8 threads each running rounds of 5 reservations (then settling them in
    rounds) against one 3 000-token key quota and the tenant's windows: the rounds lock the same windows in one
    order (no deadlock: every round completes), and the quota holds at every moment."""
    replicas = [_ledger(database_url), _ledger(database_url)]
    quota = (Quota(3600, max_tokens=3000),)
    errors: list[BaseException] = []
    peak = [0]
    lock = threading.Lock()

    def worker(n: int):
        led = replicas[n % 2]
        try:
            for i in range(6):
                ids = [f"w{n}-{i}-{j}" for j in range(5)]
                decisions = led.reserve_many([(_r(rid, quotas=quota), NOW) for rid in ids])
                assert not [d for d in decisions if isinstance(d, Exception)]
                for d in decisions:
                    if d.granted:
                        key = next(w for w in d.windows if w.limit.scope.startswith("key:"))
                        with lock:
                            peak[0] = max(peak[0], key.tokens)
                granted = [SettleItem(rid, Usage(10, 5), "completed") for rid, d in zip(ids, decisions, strict=True)
                           if d.granted]
                assert all(s.recorded for s in led.settle_many(granted, NOW))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and 0 < peak[0] <= 3000
    probe = replicas[0].reserve(_r("probe", max_in=1, max_out=1, quotas=quota), NOW)
    settled = replicas[0].totals("t")
    key = next(w for w in probe.windows if w.limit.scope.startswith("key:"))
    assert key.tokens == settled.prompt_tokens + settled.completion_tokens + 2  # every charge corrected exactly
