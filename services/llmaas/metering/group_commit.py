"""Group commit: the reservations (and the settlements) that arrive while the ledger is busy share its next
transaction.

Why: a transaction (and its commit) is most of what a reservation costs in the ledger, and a Reserve per request
used to be one transaction each. Here one round is in flight at a time: a lone Reserve is a round of one at once,
so nothing waits for a batch to fill (no added latency at low load); under load, whatever arrived during a round
goes into the next one, in arrival order (llmaas.metering.ledger decides each reservation as if they came one after
another, so nothing overshoots). A Reserve answers only after its round committed: a granted reservation is durable
before the router dispatches the request, as before.

Rounds run on one thread of their own: the event loop never waits for the database (gRPC goes on during a commit),
and one writer is all SQLite allows anyway. A round's reservations are answered as soon as they are committed,
before the same round's settlements (nobody waits for those) get their own transaction.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from llmaas.metering.ledger import Decision, Ledger, Reservation, SettleItem, Settlement

# At most this many reservations, and as many settlements, per round: bounds a transaction's length (and SQLite's
# bound parameters: 14 per reservation).
MAX_ITEMS = 256


def _deliver(futures: list[asyncio.Future], results: list, raise_errors: bool) -> None:
    for future, result in zip(futures, results, strict=True):
        if future.done():  # its caller went away
            continue
        if raise_errors and isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)


class GroupCommit:
    def __init__(self, ledger: Ledger, clock: Callable[[], dt.datetime], max_items: int = MAX_ITEMS) -> None:
        self._ledger = ledger
        self._clock = clock
        self._max = max_items
        self._db = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ledger")
        self._reserves: list[tuple[Reservation, dt.datetime, asyncio.Future]] = []
        self._settles: list[tuple[SettleItem, asyncio.Future]] = []
        self._runner: asyncio.Task | None = None
        self.rounds = 0  # transactions run (tests and the bench read it)

    async def reserve(self, r: Reservation, now: dt.datetime) -> Decision:
        """The reservation's decision once its round is committed (raises what failed it)."""
        future = asyncio.get_running_loop().create_future()
        self._reserves.append((r, now, future))
        self._wake()
        return await future

    async def settle(self, items: list[SettleItem]) -> list[Settlement | Exception]:
        """One result per item, in order, once their round is committed: its Settlement, or what failed it."""
        loop = asyncio.get_running_loop()
        futures = [loop.create_future() for _ in items]
        self._settles.extend(zip(items, futures, strict=True))
        self._wake()
        return list(await asyncio.gather(*futures))

    def _wake(self) -> None:
        if self._runner is None or self._runner.done():
            self._runner = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while self._reserves or self._settles:
            reserves, self._reserves = self._reserves[:self._max], self._reserves[self._max:]
            settles, self._settles = self._settles[:self._max], self._settles[self._max:]
            try:
                await loop.run_in_executor(self._db, self._round, loop, reserves, settles)
            except BaseException as e:  # never leave a caller waiting (the round itself catches its items' errors)
                futures = [f for *_, f in reserves + settles]
                _deliver(futures, [e] * len(futures), True)
                if isinstance(e, asyncio.CancelledError):
                    raise

    def _round(self, loop: asyncio.AbstractEventLoop, reserves: list, settles: list) -> None:
        """On the ledger's thread: the reservations' transaction (answered at once), then the settlements'."""
        if reserves:
            decisions = self._ledger.reserve_many([(r, now) for r, now, _ in reserves])
            self.rounds += 1
            loop.call_soon_threadsafe(_deliver, [f for *_, f in reserves], decisions, True)
        if settles:
            settled = self._ledger.settle_many([item for item, _ in settles], self._clock())
            self.rounds += 1
            loop.call_soon_threadsafe(_deliver, [f for _, f in settles], settled, False)

    def close(self) -> None:
        self._db.shutdown(wait=True)
