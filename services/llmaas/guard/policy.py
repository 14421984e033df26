"""Per-tenant guard policy (mode and threshold) in SQL, with the service-wide default for tenants without one.

Read on every request, so cached for CACHE_SECONDS: a change made through one replica reaches the others within it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from llmaas.common.db import upsert
from llmaas.guard.tables import guard_policies

MODES = ("enforce", "shadow", "off")
CACHE_SECONDS = 2.0


@dataclass(frozen=True)
class Policy:
    mode: str  # enforce, shadow, off
    threshold: float


class PolicyStore:
    def __init__(self, engine: sa.Engine, default: Policy) -> None:
        self._engine = engine
        self.default = default
        self._cache: dict[str, tuple[float, Policy]] = {}

    def get(self, tenant_id: str) -> Policy:
        now = time.monotonic()
        hit = self._cache.get(tenant_id)
        if hit and hit[0] > now:
            return hit[1]
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(guard_policies.c.mode, guard_policies.c.threshold)
                               .where(guard_policies.c.tenant_id == tenant_id)).first()
        policy = Policy(row.mode, row.threshold or self.default.threshold) if row else self.default
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[tenant_id] = (now + CACHE_SECONDS, policy)
        return policy

    def set(self, tenant_id: str, mode: str, threshold: float) -> Policy:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}")
        if not 0.0 <= threshold < 1.0:
            raise ValueError("threshold must be in [0, 1) (0: the service's default)")
        values = {"tenant_id": tenant_id, "mode": mode, "threshold": threshold, "updated_at": datetime.now(UTC)}
        with self._engine.begin() as conn:
            upsert(conn, guard_policies, values, key=("tenant_id",))
        self._cache.pop(tenant_id, None)
        return self.get(tenant_id)
