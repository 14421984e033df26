"""The audit trail: append-only, hash-chained, metadata only.

hash(n) = sha256(hash(n-1) + canonical(record n)), starting from 64 zeros. Changing, deleting or inserting any
record breaks the chain from there on, and `verify` finds the first broken record. Appends from every auth replica
serialise on the one-row audit_head table (an UPDATE takes its row lock first, on SQLite and PostgreSQL alike).

Writers await the commit of their record: an authorised request's record is durable before the request goes on.
Concurrent appends share one transaction (group commit), so the cost per request stays one short wait, not one
fsync each.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime

import sqlalchemy as sa

from llmaas.auth.tables import audit_events, audit_head
from llmaas.common.db import as_utc

log = logging.getLogger("llmaas.auth.audit")

GENESIS = "0" * 64
_MAX_BATCH = 512


@dataclass(frozen=True)
class AuditRecord:
    tenant_id: str
    key_id: str
    actor: str
    action: str
    endpoint: str = ""
    model: str = ""
    status: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    client_address: str = ""
    trace_id: str = ""
    request_id: str = ""
    detail: str = ""
    at: datetime = field(default_factory=lambda: datetime.now(UTC))


@dataclass(frozen=True)
class StoredRecord:
    seq: int
    record: AuditRecord
    prev_hash: str
    hash: str


@dataclass(frozen=True)
class ChainReport:
    ok: bool
    checked: int
    first_bad_seq: int = 0
    message: str = ""


class DuplicateRecord(Exception):
    """A request.completed record for this request id already exists."""




def canonical(seq: int, record: AuditRecord) -> bytes:
    """The bytes a record's hash covers: every field, in a fixed order, time to the microsecond in UTC."""
    body = asdict(record)
    body["at"] = as_utc(record.at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    body["seq"] = seq
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(seq, record)).hexdigest()


_RECORD_FIELDS = [f.name for f in fields(AuditRecord)]
_WIDTHS = {c.name: c.type.length for c in audit_events.columns if getattr(c.type, "length", None)}


def clipped(record: AuditRecord) -> AuditRecord:
    """Fits every text to its column (PostgreSQL refuses longer values; an audit write must never fail for it)."""
    too_long = {name: getattr(record, name)[:width] for name, width in _WIDTHS.items()
                if name in _RECORD_FIELDS and len(getattr(record, name)) > width}
    return replace(record, **too_long) if too_long else record


def _row_to_record(row) -> AuditRecord:
    values = {name: getattr(row, name) for name in _RECORD_FIELDS}
    values["at"] = as_utc(values["at"])
    return AuditRecord(**values)


class AuditStore:
    """Synchronous SQL side: append a batch, list, verify."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def append_batch(self, records: list[AuditRecord]) -> list[int]:
        """Appends the records in one transaction; returns their sequence numbers."""
        with self._engine.begin() as conn:
            # The UPDATE first: it takes the write lock, so no other replica can read the same tip.
            conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=audit_head.c.seq))
            tip = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash).where(audit_head.c.id == 1)).one()
            seq, prev = tip.seq, tip.hash
            rows, seqs = [], []
            for record in map(clipped, records):
                seq += 1
                digest = chain_hash(prev, seq, record)
                rows.append({**asdict(record), "seq": seq, "prev_hash": prev, "hash": digest})
                seqs.append(seq)
                prev = digest
            conn.execute(audit_events.insert(), rows)
            conn.execute(audit_head.update().where(audit_head.c.id == 1).values(seq=seq, hash=prev))
        return seqs

    def completed_exists(self, request_id: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(audit_events.c.seq).where(
                audit_events.c.request_id == request_id, audit_events.c.action == "request.completed")
            ).first() is not None

    def list(self, tenant_id: str, *, after_seq: int = 0, limit: int = 100, key_id: str = "",
             action: str = "") -> list[StoredRecord]:
        query = (sa.select(audit_events).where(audit_events.c.tenant_id == tenant_id, audit_events.c.seq > after_seq)
                 .order_by(audit_events.c.seq).limit(limit))
        if key_id:
            query = query.where(audit_events.c.key_id == key_id)
        if action:
            query = query.where(audit_events.c.action == action)
        with self._engine.connect() as conn:
            return [StoredRecord(r.seq, _row_to_record(r), r.prev_hash, r.hash) for r in conn.execute(query)]

    def verify(self, batch: int = 5000) -> ChainReport:
        """Walks the whole chain in order, recomputing every hash; stops at the first mismatch."""
        prev, expected_seq, checked = GENESIS, 1, 0
        with self._engine.connect() as conn:
            tip = conn.execute(sa.select(audit_head.c.seq, audit_head.c.hash)).one()
            while True:
                rows = conn.execute(sa.select(audit_events).where(audit_events.c.seq >= expected_seq)
                                    .order_by(audit_events.c.seq).limit(batch)).all()
                for r in rows:
                    if r.seq != expected_seq:
                        return ChainReport(False, checked, expected_seq, f"record {expected_seq} is missing")
                    if r.prev_hash != prev or chain_hash(prev, r.seq, _row_to_record(r)) != r.hash:
                        return ChainReport(False, checked, r.seq, f"record {r.seq} does not match its hash")
                    prev, expected_seq, checked = r.hash, expected_seq + 1, checked + 1
                if len(rows) < batch:
                    break
        if tip.seq != checked or tip.hash != prev:
            first_bad = checked + 1 if tip.seq > checked else tip.seq
            return ChainReport(False, checked, first_bad,
                               f"the chain ends at record {checked} but its recorded tip is record {tip.seq}")
        return ChainReport(True, checked)


class AuditLog:
    """The async front: `await append(record)` returns once the record is committed (group commit)."""

    def __init__(self, store: AuditStore) -> None:
        self.store = store
        self._pending: list[tuple[AuditRecord, asyncio.Future]] = []
        self._outstanding: set[asyncio.Future] = set()
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None

    async def append(self, record: AuditRecord) -> int:
        loop = asyncio.get_running_loop()
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            self._writer = loop.create_task(self._write_loop())
        future = loop.create_future()
        self._outstanding.add(future)
        future.add_done_callback(self._outstanding.discard)
        self._pending.append((record, future))
        self._wakeup.set()
        return await future

    async def append_many(self, records: Iterable[AuditRecord]) -> None:
        await asyncio.gather(*(self.append(r) for r in records))

    async def _write_loop(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            while self._pending:
                batch, self._pending = self._pending[:_MAX_BATCH], self._pending[_MAX_BATCH:]
                try:
                    seqs = await asyncio.to_thread(self.store.append_batch, [r for r, _ in batch])
                except Exception as e:  # the callers fail closed; the writer keeps serving later appends
                    log.error("audit append failed", extra={"fields": {"error": type(e).__name__}})
                    for _, future in batch:
                        if not future.done():
                            future.set_exception(e)
                    continue
                for (_, future), seq in zip(batch, seqs, strict=True):
                    if not future.done():
                        future.set_result(seq)

    async def close(self) -> None:
        """Lets pending appends finish, then stops the writer."""
        if self._outstanding:
            await asyncio.gather(*self._outstanding, return_exceptions=True)
        if self._writer is not None:
            self._writer.cancel()
