"""Per-tenant guard policy (mode and threshold) in SQL, with the service-wide default for tenants without one.

Read on every request, so cached for CACHE_SECONDS: a change made through one replica reaches the others within it
(and the replica that made it at once). The service reads a stale entry again in a thread (fetch), so that the event
loop never waits on the database; concurrent requests of one tenant share that read.
"""

from __future__ import annotations

import asyncio
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from llmaas.common.db import upsert
from llmaas.guard.tables import guard_policies

MODES = ("enforce", "shadow", "off")
CACHE_SECONDS = 2.0
MAX_CACHED = 100_000


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce, shadow, off
    threshold: float


class PolicyStore:
    def __init__(self, engine: sa.Engine, default: Policy) -> None:
        self._engine = engine
        self.default = default
        self._cache: dict[str, tuple[float, Policy]] = {}
        # Reads in flight (fetch), by tenant; set() forgets the tenant's, so that no later request joins a read that
        # began before the change.
        self._reading: dict[str, asyncio.Future[Policy]] = {}
        # Bumped by every set(): a read that began before a change does not cache what it read (reads run in
        # threads: the lock makes "still the same generation, so cache it" one step).
        self._generation = 0
        self._lock = threading.Lock()

    def cached(self, tenant_id: str) -> Policy | None:
        """The tenant's policy if the cache has it fresh, else None (without reading anything)."""
        hit = self._cache.get(tenant_id)
        return hit[1] if hit is not None and hit[0] > time.monotonic() else None

    def get(self, tenant_id: str) -> Policy:
        """The tenant's policy, read here when the cache has it no more (admin RPCs, tests)."""
        return self.cached(tenant_id) or self._read(tenant_id)

    async def fetch(self, tenant_id: str) -> Policy:
        """The tenant's policy, read in a thread when the cache has it no more."""
        policy = self.cached(tenant_id)
        if policy is not None:
            return policy
        reading = self._reading.get(tenant_id)
        if reading is None:
            reading = asyncio.ensure_future(asyncio.to_thread(self._read, tenant_id))
            self._reading[tenant_id] = reading
            reading.add_done_callback(lambda done: self._forget_read(tenant_id, done))
        return await asyncio.shield(reading)  # a caller that leaves does not cancel the others' read

    def _forget_read(self, tenant_id: str, done: asyncio.Future) -> None:
        if self._reading.get(tenant_id) is done:
            del self._reading[tenant_id]
        if not done.cancelled():
            done.exception()  # retrieved: a failed read is raised to its waiters, not logged as never retrieved

    def _read(self, tenant_id: str) -> Policy:
        generation = self._generation
        expires = time.monotonic() + CACHE_SECONDS  # from before the read: never fresher than the database was
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(guard_policies.c.mode, guard_policies.c.threshold)
                               .where(guard_policies.c.tenant_id == tenant_id)).first()
        policy = Policy(row.mode, row.threshold or self.default.threshold) if row else self.default
        with self._lock:
            if generation == self._generation:
                if len(self._cache) > MAX_CACHED:
                    self._cache.clear()
                self._cache[tenant_id] = (expires, policy)
        return policy

    def set(self, tenant_id: str, mode: str, threshold: float) -> Policy:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError("threshold must be in [0, 1) (0: the service's default)")
        values = {"tenant_id": tenant_id, "mode": mode, "threshold": threshold, "updated_at": datetime.now(UTC)}
        with self._engine.begin() as conn:
            upsert(conn, guard_policies, values, key=("tenant_id",))
        with self._lock:
            self._generation += 1
            self._cache.pop(tenant_id, None)
        self._reading.pop(tenant_id, None)
        return self._read(tenant_id)
