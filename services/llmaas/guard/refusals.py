"""A tenant's recent refusals (issue 21): every flagged verdict, blocked under enforce or flagged under shadow, with
its time, score, threshold and reason codes, so that a tenant admin can find false positives and report them.
Metadata only: the prompt's text is never stored.

Written off the event loop (a thread per flagged verdict, which are rare); rows older than RETENTION_DAYS are
deleted now and then. Read by GuardService.ListGuardRefusals (tenant admin of that tenant, or platform admin).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from llmaas.guard.tables import guard_refusals

log = logging.getLogger("llmaas.guard")

RETENTION_DAYS = 30
PRUNE_EVERY = 200  # writes between two deletions of expired rows
MAX_LIMIT = 500


@dataclass(frozen=True)
class Refusal:
    created_at: datetime
    request_id: str
    decision: str  # block, flag
    mode: str
    score: float
    threshold: float
    reasons: tuple[str, ...]


class RefusalLog:
    def __init__(self, engine: sa.Engine, retention_days: int = RETENTION_DAYS) -> None:
        self._engine = engine
        self._retention = timedelta(days=retention_days)
        self._writes = itertools.count(1)
        self._pending: set[asyncio.Task] = set()

    def add(self, tenant_id: str, refusal: Refusal) -> None:
        """Records a refusal in a thread; the caller does not wait for it."""
        task = asyncio.ensure_future(asyncio.to_thread(self.write, tenant_id, refusal))
        self._pending.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("guard refusal not recorded", extra={"fields": {"error": repr(task.exception())}})

    async def drain(self) -> None:
        """Waits for the writes in flight (tests; shutdown)."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)

    def write(self, tenant_id: str, refusal: Refusal) -> None:
        with self._engine.begin() as conn:
            conn.execute(guard_refusals.insert().values(
                tenant_id=tenant_id, created_at=refusal.created_at, request_id=refusal.request_id[:128],
                decision=refusal.decision, mode=refusal.mode, score=refusal.score, threshold=refusal.threshold,
                reasons=",".join(refusal.reasons)[:512]))
            if next(self._writes) % PRUNE_EVERY == 0:
                conn.execute(guard_refusals.delete().where(
                    guard_refusals.c.created_at < datetime.now(UTC) - self._retention))

    def recent(self, tenant_id: str, limit: int = 50) -> list[Refusal]:
        """The tenant's newest refusals first, at most `limit` (capped at MAX_LIMIT), within the retention."""
        since = datetime.now(UTC) - self._retention
        query = (sa.select(guard_refusals).where(guard_refusals.c.tenant_id == tenant_id,
                                                 guard_refusals.c.created_at >= since)
                 .order_by(guard_refusals.c.created_at.desc(), guard_refusals.c.id.desc())
                 .limit(max(1, min(limit, MAX_LIMIT))))
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [Refusal(_aware(r.created_at), r.request_id, r.decision, r.mode, r.score, r.threshold,
                        tuple(x for x in r.reasons.split(",") if x)) for r in rows]


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)  # SQLite returns naive datetimes
