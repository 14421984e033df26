"""Files' records and batches' state in SQL (SQLite by default, PostgreSQL when configured: llmaas.common.db).

Synchronous (SQLAlchemy Core): the async callers run these methods in a thread. Every change of a batch's state is
one transaction, so a worker killed at any point leaves a state the next one resumes from (llmaas.router.batch.worker).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

import sqlalchemy as sa

from llmaas.common.identity import Identity, Quota
from llmaas.router.batch.tables import batch_lines, batches, files

# Statuses (OpenAI's). A worker holds a batch in one of ACTIVE; the others are final.
ACTIVE = ("validating", "in_progress", "finalizing", "cancelling")
FINAL = ("completed", "failed", "expired", "cancelled")


def identity_json(identity: Identity) -> str:
    return json.dumps({"m": list(identity.models), "s": identity.serve_successor, "r": identity.role,
                       "q": [[q.window_seconds, q.max_requests, q.max_tokens] for q in identity.quotas]})


def identity_from_json(tenant_id: str, key_id: str, raw: str) -> Identity:
    d = json.loads(raw)
    return Identity(tenant_id=tenant_id, key_id=key_id, role=d["r"], models=tuple(d["m"]),
                    quotas=tuple(Quota(*q) for q in d["q"]), serve_successor=bool(d["s"]))


@dataclass(frozen=True)
class LineState:
    line: int
    state: str
    attempt: int
    ok: bool | None
    prompt_tokens: int
    completion_tokens: int


class Store:
    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # Files.
    def add_file(self, row: dict) -> None:
        with self.engine.begin() as conn:
            conn.execute(files.insert().values(**row))

    def get_file(self, tenant_id: str, file_id: str) -> dict | None:
        with self.engine.connect() as conn:
            row = conn.execute(files.select().where(files.c.id == file_id, files.c.tenant_id == tenant_id)).first()
        return row._asdict() if row else None

    def list_files(self, tenant_id: str, purpose: str, limit: int, after: str, ascending: bool) -> list[dict]:
        query = files.select().where(files.c.tenant_id == tenant_id)
        if purpose:
            query = query.where(files.c.purpose == purpose)
        order = (files.c.created_at, files.c.id)
        with self.engine.connect() as conn:
            if after:
                cursor = conn.execute(sa.select(files.c.created_at, files.c.id).where(
                    files.c.id == after, files.c.tenant_id == tenant_id)).first()
                if cursor is not None:
                    key = sa.tuple_(*order)
                    query = query.where(key > tuple(cursor) if ascending else key < tuple(cursor))
            query = query.order_by(*(c.asc() if ascending else c.desc() for c in order)).limit(limit)
            return [r._asdict() for r in conn.execute(query)]

    def delete_file(self, tenant_id: str, file_id: str) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(files.delete().where(files.c.id == file_id,
                                                     files.c.tenant_id == tenant_id)).rowcount > 0

    def expired_files(self, now: int, limit: int = 500) -> list[dict]:
        with self.engine.connect() as conn:
            return [r._asdict() for r in conn.execute(files.select().where(
                files.c.expires_at.is_not(None), files.c.expires_at <= now).limit(limit))]

    # Batches.
    def add_batch(self, row: dict, lines: int) -> None:
        """The batch and one pending row per input line, in one transaction."""
        with self.engine.begin() as conn:
            conn.execute(batches.insert().values(**row))
            for start in range(0, lines, 5000):
                conn.execute(batch_lines.insert(), [{"batch_id": row["id"], "line": i, "state": "pending"}
                                                    for i in range(start, min(lines, start + 5000))])

    def get_batch(self, batch_id: str, tenant_id: str | None = None) -> dict | None:
        query = batches.select().where(batches.c.id == batch_id)
        if tenant_id is not None:
            query = query.where(batches.c.tenant_id == tenant_id)
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        return row._asdict() if row else None

    def list_batches(self, tenant_id: str, limit: int, after: str) -> list[dict]:
        query = batches.select().where(batches.c.tenant_id == tenant_id)
        order = (batches.c.created_at, batches.c.id)
        with self.engine.connect() as conn:
            if after:
                cursor = conn.execute(sa.select(batches.c.created_at, batches.c.id).where(
                    batches.c.id == after, batches.c.tenant_id == tenant_id)).first()
                if cursor is not None:
                    query = query.where(sa.tuple_(*order) < tuple(cursor))
            query = query.order_by(*(c.desc() for c in order)).limit(limit)
            return [r._asdict() for r in conn.execute(query)]

    def active_batches(self, tenant_id: str) -> int:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(batches).where(
                batches.c.tenant_id == tenant_id, batches.c.status.in_(ACTIVE))).scalar_one()

    def update_batch(self, batch_id: str, expect: tuple[str, ...] | None = None, **values) -> bool:
        """Sets `values`; with `expect`, only when the batch's status is one of them (a compare-and-set)."""
        query = batches.update().where(batches.c.id == batch_id)
        if expect is not None:
            query = query.where(batches.c.status.in_(expect))
        with self.engine.begin() as conn:
            return conn.execute(query.values(**values)).rowcount > 0

    def request_cancel(self, tenant_id: str, batch_id: str, now: int) -> dict | None:
        """validating/in_progress -> cancelling (the worker stops dispatching and finalizes); the batch as it is."""
        with self.engine.begin() as conn:
            conn.execute(batches.update().where(
                batches.c.id == batch_id, batches.c.tenant_id == tenant_id,
                batches.c.status.in_(("validating", "in_progress"))).values(status="cancelling", cancelling_at=now))
            row = conn.execute(batches.select().where(batches.c.id == batch_id,
                                                      batches.c.tenant_id == tenant_id)).first()
        return row._asdict() if row else None

    def claim(self, owner: str, lease_seconds: float, now: float | None = None, *,
              exclude: frozenset[str] = frozenset(), busy_tenants: frozenset[str] = frozenset()) -> dict | None:
        """An active batch whose lease has lapsed (or is this worker's), leased to `owner`; None if none. The oldest
        of a tenant not in `busy_tenants` first (a tenant's batches do not hold up the others'), else the oldest;
        never one of `exclude` (those this worker runs already)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            query = sa.select(batches.c.id, batches.c.tenant_id).where(
                batches.c.status.in_(ACTIVE),
                sa.or_(batches.c.lease_until < now, batches.c.lease_owner == owner))
            if exclude:
                query = query.where(batches.c.id.not_in(exclude))
            candidates = conn.execute(query.order_by(batches.c.created_at, batches.c.id).limit(50)).all()
            candidates.sort(key=lambda row: row.tenant_id in busy_tenants)  # stable: the oldest first within each
            for batch_id, _ in candidates[:5]:
                taken = conn.execute(batches.update().where(
                    batches.c.id == batch_id, batches.c.status.in_(ACTIVE),
                    sa.or_(batches.c.lease_until < now, batches.c.lease_owner == owner),
                ).values(lease_owner=owner, lease_until=now + lease_seconds)).rowcount
                if taken:
                    return conn.execute(batches.select().where(batches.c.id == batch_id)).first()._asdict()
        return None

    def renew(self, batch_id: str, owner: str, lease_seconds: float) -> bool:
        with self.engine.begin() as conn:
            return conn.execute(batches.update().where(batches.c.id == batch_id, batches.c.lease_owner == owner)
                                .values(lease_until=time.time() + lease_seconds)).rowcount > 0

    def release(self, batch_id: str, owner: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(batches.update().where(batches.c.id == batch_id, batches.c.lease_owner == owner)
                         .values(lease_owner=None, lease_until=0))

    # Lines.
    def lines(self, batch_id: str, state: str | None = None) -> list[LineState]:
        query = sa.select(batch_lines.c.line, batch_lines.c.state, batch_lines.c.attempt, batch_lines.c.ok,
                          batch_lines.c.prompt_tokens, batch_lines.c.completion_tokens).where(
            batch_lines.c.batch_id == batch_id)
        if state is not None:
            query = query.where(batch_lines.c.state == state)
        with self.engine.connect() as conn:
            return [LineState(*r) for r in conn.execute(query.order_by(batch_lines.c.line))]

    def results(self, batch_id: str, start: int, limit: int) -> list[tuple[int, bool | None, bytes | None]]:
        with self.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(
                sa.select(batch_lines.c.line, batch_lines.c.ok, batch_lines.c.result).where(
                    batch_lines.c.batch_id == batch_id, batch_lines.c.line >= start)
                .order_by(batch_lines.c.line).limit(limit))]

    def start_line(self, batch_id: str, line: int) -> int | None:
        """pending -> running under the next attempt (committed before the line is dispatched); the attempt, or None
        if the line was not pending."""
        with self.engine.begin() as conn:
            changed = conn.execute(batch_lines.update().where(
                batch_lines.c.batch_id == batch_id, batch_lines.c.line == line, batch_lines.c.state == "pending",
            ).values(state="running", attempt=batch_lines.c.attempt + 1)).rowcount
            if not changed:
                return None
            return conn.execute(sa.select(batch_lines.c.attempt).where(
                batch_lines.c.batch_id == batch_id, batch_lines.c.line == line)).scalar_one()

    def finish_line(self, batch_id: str, line: int, attempt: int, ok: bool, prompt_tokens: int,
                    completion_tokens: int, result: bytes) -> bool:
        """running -> done with its (encrypted) result and usage, and the batch's counts, in one transaction."""
        with self.engine.begin() as conn:
            changed = conn.execute(batch_lines.update().where(
                batch_lines.c.batch_id == batch_id, batch_lines.c.line == line, batch_lines.c.attempt == attempt,
                batch_lines.c.state == "running",
            ).values(state="done", ok=ok, prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
                     result=result)).rowcount
            if changed:
                counts = {"completed": batches.c.completed + 1} if ok else {"failed": batches.c.failed + 1}
                conn.execute(batches.update().where(batches.c.id == batch_id).values(
                    prompt_tokens=batches.c.prompt_tokens + prompt_tokens,
                    completion_tokens=batches.c.completion_tokens + completion_tokens, **counts))
            return changed > 0

    def requeue_line(self, batch_id: str, line: int) -> None:
        """running -> pending (its attempt released: the next dispatch uses a new request id)."""
        with self.engine.begin() as conn:
            conn.execute(batch_lines.update().where(
                batch_lines.c.batch_id == batch_id, batch_lines.c.line == line, batch_lines.c.state == "running",
            ).values(state="pending"))

    def delete_lines(self, batch_id: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(batch_lines.delete().where(batch_lines.c.batch_id == batch_id))

    def finalize(self, batch_id: str, owner: str, new_files: list[dict], values: dict) -> bool:
        """The batch's final state, its output and error files' records, and its lines dropped (their results are
        in those files now): one transaction, only while `owner` holds the batch."""
        with self.engine.begin() as conn:
            changed = conn.execute(batches.update().where(
                batches.c.id == batch_id, batches.c.lease_owner == owner, batches.c.status.in_(ACTIVE),
            ).values(**values)).rowcount
            if not changed:
                return False
            for row in new_files:
                conn.execute(files.insert().values(**row))
            conn.execute(batch_lines.delete().where(batch_lines.c.batch_id == batch_id))
        return True

    def file_exists(self, file_id: str) -> bool:
        with self.engine.connect() as conn:
            return conn.execute(sa.select(files.c.id).where(files.c.id == file_id)).first() is not None

    def set_file_expiry(self, file_id: str, expires_at: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(files.update().where(files.c.id == file_id).values(expires_at=expires_at))
