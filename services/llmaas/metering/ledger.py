"""The usage ledger: reservations before dispatch, idempotent settlements after."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from llmaas.metering.tables import usage


@dataclass(frozen=True)
class Totals:
    requests: int
    prompt_tokens: int
    completion_tokens: int


class UnknownReservation(Exception):
    pass


class Ledger:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def reserve(self, request_id: str, tenant_id: str, key_id: str, model: str, max_in: int, max_out: int) -> bool:
        """Records the worst case. Returns True (no limits yet; tiers and budgets refuse here)."""
        with self._engine.begin() as conn:
            exists = conn.execute(sa.select(usage.c.request_id).where(usage.c.request_id == request_id)).first()
            if exists is None:
                conn.execute(usage.insert().values(
                    request_id=request_id, tenant_id=tenant_id, key_id=key_id, model=model,
                    reserved_input_tokens=max_in, reserved_output_tokens=max_out, reserved_at=datetime.now(UTC)))
        return True

    def settle(self, request_id: str, prompt_tokens: int, completion_tokens: int, outcome: str) -> bool:
        """Writes the real usage once. Returns False if the request was already settled."""
        with self._engine.begin() as conn:
            result = conn.execute(
                usage.update()
                .where(usage.c.request_id == request_id, usage.c.settled_at.is_(None))
                .values(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, outcome=outcome,
                        settled_at=datetime.now(UTC)))
            if result.rowcount == 1:
                return True
            if conn.execute(sa.select(usage.c.request_id).where(usage.c.request_id == request_id)).first() is None:
                raise UnknownReservation(request_id)
            return False

    def totals(self, tenant_id: str, key_id: str = "") -> Totals:
        query = sa.select(
            sa.func.count(), sa.func.coalesce(sa.func.sum(usage.c.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(usage.c.completion_tokens), 0),
        ).where(usage.c.tenant_id == tenant_id, usage.c.settled_at.is_not(None))
        if key_id:
            query = query.where(usage.c.key_id == key_id)
        with self._engine.connect() as conn:
            n, p, c = conn.execute(query).one()
        return Totals(int(n), int(p), int(c))
