"""Group commit (llmaas.metering.group_commit): concurrent reservations share a transaction, each decided in arrival
order, none answered before its round is committed; the event loop never runs a transaction."""

from __future__ import annotations

import asyncio
import datetime as dt
import threading
from pathlib import Path

import pytest
from llmaas.common.db import make_engine, migrate
from llmaas.common.identity import Quota
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.group_commit import GroupCommit
from llmaas.metering.ledger import Ledger, Reservation, SettleItem, Settlement, UnknownReservation
from llmaas.metering.pricing import Usage, load_prices
from llmaas.metering.tiers import load_tiers
from llmaas.stack.paths import DEPLOY_DIR

NOW = dt.datetime(2026, 11, 23, 15, 4, 5, tzinfo=dt.UTC)


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    engine = make_engine(f"sqlite:///{tmp_path / 'm.db'}")
    migrate(engine, Path(ledger_mod.__file__).parent / "migrations")
    return Ledger(engine, load_prices(DEPLOY_DIR / "metering" / "prices.yaml"),
                  load_tiers(DEPLOY_DIR / "metering" / "tiers.yaml"))


def _r(rid: str, quota: Quota = Quota(3600, max_tokens=1000)) -> Reservation:
    return Reservation(rid, "t", "k", "m", 100, 50, quotas=(quota,))  # 150 tokens worst case


async def test_concurrent_reserves_share_rounds_and_never_overshoot(ledger: Ledger):
    commits = GroupCommit(ledger, lambda: NOW)
    decisions = await asyncio.gather(*(commits.reserve(_r(f"r{i}"), NOW) for i in range(40)))
    # In arrival order: the first 6 fit the 1 000-token quota (6 * 150), every later one is refused.
    assert [d.granted for d in decisions] == [True] * 6 + [False] * 34
    assert commits.rounds < 40 / 4  # gathered: the first round has one, the next one every other
    key = [next(w for w in d.windows if w.limit.scope.startswith("key:")) for d in decisions[:6]]
    assert [w.tokens for w in key] == [150 * (i + 1) for i in range(6)]
    commits.close()


async def test_a_reserve_answers_only_once_its_round_is_committed(ledger: Ledger):
    """Every answered reservation is on disk: a second connection (another process after a SIGKILL) sees it."""
    other = Ledger(make_engine(str(ledger._engine.url)), ledger.prices, ledger.tiers)
    commits = GroupCommit(ledger, lambda: NOW)
    for d in await asyncio.gather(*(commits.reserve(_r(f"d{i}", Quota(60, max_requests=100)), NOW)
                                    for i in range(10))):
        assert d.granted
    assert all(other.settle(f"d{i}", Usage(1, 1), "completed", NOW).recorded for i in range(10))
    commits.close()


async def test_the_event_loop_never_runs_a_transaction(ledger: Ledger, monkeypatch):
    loop_thread = threading.get_ident()
    threads = set()
    real = ledger_mod.hot_sql.transaction

    def spy(engine):
        threads.add(threading.get_ident())
        return real(engine)

    monkeypatch.setattr(ledger_mod.hot_sql, "transaction", spy)
    commits = GroupCommit(ledger, lambda: NOW)
    await commits.reserve(_r("a"), NOW)
    await commits.settle([SettleItem("a", Usage(1, 1), "completed")])
    assert threads and loop_thread not in threads
    commits.close()


async def test_settlements_of_several_calls_go_in_one_round_each_answered_apart(ledger: Ledger):
    commits = GroupCommit(ledger, lambda: NOW)
    for i in range(6):
        await commits.reserve(_r(f"s{i}", Quota(60, max_requests=100)), NOW)
    rounds = commits.rounds
    first, second = await asyncio.gather(
        commits.settle([SettleItem("s0", Usage(1, 1), "completed"), SettleItem("nope", Usage(), "failed")]),
        commits.settle([SettleItem(f"s{i}", Usage(2, 2), "completed") for i in range(1, 6)]))
    assert isinstance(first[0], Settlement) and first[0].recorded and isinstance(first[1], UnknownReservation)
    assert [s.recorded for s in second] == [True] * 5
    assert commits.rounds - rounds <= 2
    commits.close()


async def test_a_caller_gone_does_not_disturb_the_others(ledger: Ledger):
    commits = GroupCommit(ledger, lambda: NOW)
    gone = asyncio.ensure_future(commits.reserve(_r("gone"), NOW))
    stays = asyncio.ensure_future(commits.reserve(_r("stays"), NOW))
    await asyncio.sleep(0)
    gone.cancel()
    assert (await stays).granted
    # The cancelled caller's reservation may have been committed (the router then settles it as cancelled).
    [s] = await commits.settle([SettleItem("gone", Usage(), "cancelled")])
    assert isinstance(s, Settlement | UnknownReservation)
    commits.close()


async def test_an_error_reaches_its_own_caller_only(ledger: Ledger):
    commits = GroupCommit(ledger, lambda: NOW)
    bad = Reservation("bad", "t", "k", "m", 2**64, 50)
    ok, failed = await asyncio.gather(commits.reserve(_r("ok"), NOW), commits.reserve(bad, NOW),
                                      return_exceptions=True)
    assert ok.granted and isinstance(failed, Exception)
    commits.close()
