"""The audit trail: append-only, hash-chained, metadata only.

hash(n) = sha256(hash(n-1) + canonical(record n)), starting from 64 zeros. Changing, deleting or inserting any
record breaks the chain from there on, and `verify` finds the first broken record. Appends from every auth replica
serialise on the one-row audit_head table (an UPDATE takes its row lock first, on SQLite and PostgreSQL alike).

One writer per replica commits the records in groups (one transaction for everything that arrived meanwhile).
Admin actions and the router's completion records await their commit (`append`, `append_many`). A request's
authorisation record is written behind (`submit`): the request goes on at once and the record is committed within
FLUSH_INTERVAL plus one commit, because awaiting a commit per request cost more CPU and latency than the rest of the
check. The guarantee that replaces "durable before the request goes on" (README, "Tenants, keys and the audit
trail"): a request goes on before its record is durable only while no record has waited longer than
DURABILITY_BOUND; when one has (a slow store, a starved machine), requests wait for their own record's commit as
before. The store failing (its last commit failed) or MAX_BACKLOG records waiting: `submit` raises AuditUnavailable
and ext_authz denies with a 503 (fail closed). A record accepted is kept and retried until it is committed; only a
crash of the auth process can lose records: at most those of the requests it let through in one DURABILITY_BOUND
window.

Failed authentications are not submitted one by one: llmaas.auth.abuse counts them and hands over one record per
client address, reason and window (`count` says how many requests it stands for) through `submit_behind`.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import json
import logging
import time
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field, fields, replace
from datetime import UTC, datetime

import grpc
import sqlalchemy as sa

from llmaas.auth.tables import audit_events, audit_head
from llmaas.common.db import as_utc
from llmaas.common.errors import ApiError

log = logging.getLogger("llmaas.auth.audit")

GENESIS = "0" * 64
COMPLETED = "request.completed"

# Write-behind records wait this long for others to share their transaction (seconds). At 400 requests/s that is
# about 10 records per commit, instead of a commit (and a thread hand-off) per request.
FLUSH_INTERVAL = 0.025
# A request goes on before its record is committed only while no record has waited longer than this (seconds);
# beyond it, requests wait for their own record's commit until the writer has caught up. A commit takes a few ms
# (0.5-2 ms of CPU for 1-30 records on SQLite), so this is only reached when the store or the machine is slow.
# LLMAAS_AUTH_AUDIT_BOUND_SECONDS sets it.
DURABILITY_BOUND = 0.2
# At most this many records wait in memory (written behind, and awaited): beyond it, new records are refused.
MAX_BACKLOG = 5000
# Records per transaction (a caller's group, such as the router's batch, is never split across two).
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
    # How many requests this record stands for: failed authentications from one address for one reason are
    # recorded once per short window with their count (llmaas.auth.abuse); every other record is one event.
    count: int = 1


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


class AuditUnavailable(ApiError):
    """The audit trail cannot take a record now (its store is failing, or its backlog is full): the request is refused
    rather than let through unaudited. UNAVAILABLE: Envoy answers 503, the router retries its records."""

    def __init__(self, reason: str) -> None:
        super().__init__(grpc.StatusCode.UNAVAILABLE, "Requests cannot be audited right now, so none are accepted. "
                         "Please retry.", code="service_unavailable", headers=(("retry-after", "1"),))
        self.reason = reason


_RECORD_FIELDS = [f.name for f in fields(AuditRecord)]


def _values(record: AuditRecord) -> dict:
    """The record's fields by name: what dataclasses.asdict gives for these flat values, at a tenth of its cost (it
    deep-copies every value)."""
    return {name: getattr(record, name) for name in _RECORD_FIELDS}


def canonical(seq: int, record: AuditRecord) -> bytes:
    """The bytes a record's hash covers: every field, in a fixed order, time to the microsecond in UTC. The count
    only when it is not 1: records written before it existed keep their hashes, and changing a count either way
    still changes the bytes."""
    body = _values(record)
    body["at"] = as_utc(record.at).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if body["count"] == 1:
        del body["count"]
    body["seq"] = seq
    return json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def chain_hash(prev_hash: str, seq: int, record: AuditRecord) -> str:
    return hashlib.sha256(prev_hash.encode() + canonical(seq, record)).hexdigest()


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


# The append's statements, built once: SQLAlchemy memoizes a statement's cache key on the object, so a statement
# reused costs no key generation or compilation per transaction (a third of a small batch's CPU).
# The UPDATE first: it takes the write lock (and reads the tip in the same statement).
_LOCK_TIP = (audit_head.update().where(audit_head.c.id == 1).values(seq=audit_head.c.seq)
             .returning(audit_head.c.seq, audit_head.c.hash))
# With RETURNING, SQLAlchemy sends the rows as one multi-row INSERT ("insertmanyvalues") instead of one execution per
# row: a single SQLite step, so the writer's thread gives the GIL up once.
_INSERT = audit_events.insert().returning(audit_events.c.seq)
_SET_TIP = audit_head.update().where(audit_head.c.id == 1).values(seq=sa.bindparam("tip_seq"),
                                                                   hash=sa.bindparam("tip_hash"))
_TIP = sa.select(audit_head.c.seq, audit_head.c.hash)
_COMPLETED_AMONG = sa.select(audit_events.c.request_id).where(
    audit_events.c.action == COMPLETED, audit_events.c.request_id.in_(sa.bindparam("ids", expanding=True)))


class AuditStore:
    """Synchronous SQL side: append a batch, list, verify."""

    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine

    def append_batch(self, records: list[AuditRecord]) -> list[int | None]:
        """Appends the records in one transaction; returns each one's sequence number, or None for a request.completed
        record that was skipped because its request id is already recorded, or came earlier in the batch (the router
        retries: a repeated record never fails the others). An empty batch still takes the lock and commits: a probe
        that the store takes writes again."""
        with self._engine.begin() as conn:
            # The lock first: no other replica can read the same tip, nor write a completion record before this
            # transaction ends, so the duplicate check below is exact.
            tip = conn.execute(_LOCK_TIP).one()
            records = [clipped(r) for r in records]
            seen = self._completed(conn, {r.request_id for r in records if r.action == COMPLETED})
            seq, prev = tip.seq, tip.hash
            rows, seqs = [], []
            for record in records:
                if record.action == COMPLETED:
                    if record.request_id in seen:
                        seqs.append(None)
                        continue
                    seen.add(record.request_id)
                seq += 1
                digest = chain_hash(prev, seq, record)
                rows.append({**_values(record), "seq": seq, "prev_hash": prev, "hash": digest})
                seqs.append(seq)
                prev = digest
            if rows:
                conn.execute(_INSERT, rows)
                conn.execute(_SET_TIP, {"tip_seq": seq, "tip_hash": prev})
        return seqs

    @staticmethod
    def _completed(conn: sa.Connection, request_ids: set[str]) -> set[str]:
        """Which of these request ids already have their request.completed record (the unique partial index)."""
        found: set[str] = set()
        ids = sorted(request_ids)
        for i in range(0, len(ids), 500):  # bind parameters per statement stay well under every backend's limit
            found.update(conn.execute(_COMPLETED_AMONG, {"ids": ids[i:i + 500]}).scalars())
        return found

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
        """Walks the chain in order, recomputing every hash; stops at the first mismatch. The chain may grow while it
        is walked (each read may see a later snapshot than the tip read before it: SQLite's driver, PostgreSQL's read
        committed): the walk goes up to the tip it read, then to the next tip as long as records beyond it exist. An
        append writes its records and the tip in one transaction, so a record beyond a tip read after it was seen
        was not appended: it was inserted."""
        prev, expected_seq, checked = GENESIS, 1, 0
        with self._engine.connect() as conn:
            tip = conn.execute(_TIP).one()
            while True:
                while expected_seq <= tip.seq:
                    rows = conn.execute(sa.select(audit_events)
                                        .where(audit_events.c.seq >= expected_seq, audit_events.c.seq <= tip.seq)
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
                beyond = conn.execute(sa.select(sa.func.min(audit_events.c.seq))
                                      .where(audit_events.c.seq > tip.seq)).scalar()
                if beyond is None:
                    return ChainReport(True, checked)
                newer = conn.execute(_TIP).one()
                if newer.seq == tip.seq:
                    return ChainReport(False, checked, beyond, f"record {beyond} is beyond the chain's tip")
                tip = newer


@dataclass(eq=False)
class _Group:
    """Records that share a transaction. `future` gets their sequence numbers once committed; None: written behind
    (nobody waits), kept and retried until committed."""
    records: list[AuditRecord]
    since: float  # time.monotonic() when handed over
    future: asyncio.Future | None = None
    # Awaited, but not urgent: it waits for the writer's next round (within the flush interval) like the records
    # written behind, and shares their transaction.
    lingers: bool = False


class AuditLog:
    """The async front: one writer task that commits what is queued, one transaction at a time.

    `submit(record)`: written behind (the hot path), or a future to await while the writer is behind its bound, or
    AuditUnavailable. `await append(record)` and `await append_many(records)`: return once committed (one transaction
    for the records of one call)."""

    def __init__(self, store: AuditStore, *, flush_interval: float = FLUSH_INTERVAL,
                 bound: float = DURABILITY_BOUND, max_backlog: int = MAX_BACKLOG) -> None:
        self.store = store
        self._flush_interval, self._bound, self._max_backlog = flush_interval, bound, max_backlog
        self._queue: deque[_Group] = deque()
        self._queued = 0  # records in the queue
        self._awaited = 0  # groups in the queue that someone awaits: they are written without lingering
        self._writing: list[_Group] = []  # the groups of the transaction in progress
        self._writing_count = 0
        self._failing = False  # the last commit failed; cleared by the next one that succeeds
        self._closing = False
        self._late, self._late_logged = 0, float("-inf")  # commits later than the bound, since the last warning
        self._wakeup: asyncio.Event | None = None
        self._writer: asyncio.Task | None = None

    # Admission: one call per request, so it only reads a few fields.

    def refusal(self) -> str | None:
        """Why no record can be accepted now (the caller fails closed), or None."""
        if self._failing:
            return "the audit store is failing"
        if self._queued + self._writing_count >= self._max_backlog:
            return "the audit backlog is full"
        return None

    def behind(self) -> bool:
        """A record has waited longer than the bound for its commit."""
        oldest = self._writing[0] if self._writing else (self._queue[0] if self._queue else None)
        return oldest is not None and time.monotonic() - oldest.since > self._bound

    def submit(self, record: AuditRecord) -> asyncio.Future | None:
        """Hands the record to the writer. None: written behind, committed within FLUSH_INTERVAL plus one commit
        (the writer is within its bound). A future: the writer is behind its bound, so this record is not let go
        unwritten: the caller awaits the future, which is done once the record is committed (the old, synchronous
        guarantee; the writer then commits at once). Raises AuditUnavailable when the store is failing or the backlog
        is full: the caller fails closed."""
        reason = self.refusal()
        if reason is not None:
            raise AuditUnavailable(reason)
        if self.behind():
            future = asyncio.get_running_loop().create_future()
            self._enqueue(_Group([record], time.monotonic(), future))
            return future
        self._enqueue(_Group([record], time.monotonic()))
        return None

    def submit_behind(self, records: list[AuditRecord]) -> None:
        """Hands the records over to be written behind in one group, whatever the bound or the backlog: for the
        aggregated records of failed authentications (llmaas.auth.abuse), whose requests were refused (nothing
        waits on them) and whose number per window is bounded there. Kept and retried until committed, like any
        record written behind."""
        for i in range(0, len(records), _MAX_BATCH):
            self._enqueue(_Group(records[i:i + _MAX_BATCH], time.monotonic()))

    async def append(self, record: AuditRecord) -> int | None:
        """Returns once the record is committed: its sequence number (None: a request.completed already recorded).
        Raises AuditUnavailable when the commit fails."""
        [seq] = await self._commit([record])
        return seq

    async def append_many(self, records: Iterable[AuditRecord], *, linger: bool = False) -> list[int | None]:
        """The records in one transaction (never split), committed when this returns; sequence numbers as append.
        `linger`: committed with the writer's next round (within FLUSH_INTERVAL) rather than at once, in the same
        transaction as the records written behind meanwhile: for a caller that does not hold a client up (the
        router's batched completion records), one transaction per round instead of one per call."""
        return await self._commit(list(records), linger=linger)

    async def flush(self) -> None:
        """Returns once everything handed over before the call is committed (raises AuditUnavailable if it failed)."""
        await self._commit([])

    @property
    def pending(self) -> int:
        """Records not committed yet."""
        return self._queued + self._writing_count

    async def _commit(self, records: list[AuditRecord], *, linger: bool = False) -> list[int | None]:
        future = asyncio.get_running_loop().create_future()
        self._enqueue(_Group(records, time.monotonic(), future, lingers=linger))
        return await future

    def _enqueue(self, group: _Group) -> None:
        if self._writer is None or self._writer.done():
            self._wakeup = asyncio.Event()
            # In a context of its own: not the first request's (its logs would carry that request's trace id).
            self._writer = asyncio.get_running_loop().create_task(self._write_loop(), context=contextvars.Context())
        was_empty = not self._queue
        self._queue.append(group)
        self._queued += len(group.records)
        urgent = group.future is not None and not group.lingers
        if urgent:
            self._awaited += 1
        # Wake the writer to start a batch (it then lingers), or to write at once: someone waits, or it is full.
        if was_empty or urgent or self._queued >= _MAX_BATCH:
            self._wakeup.set()

    def _urgent(self) -> bool:
        return self._closing or self._awaited > 0 or self._queued >= _MAX_BATCH

    # The writer

    async def _write_loop(self) -> None:
        backoff = 0.0
        while True:
            if backoff:
                # After a failure: retry what is queued (or probe with an empty transaction) after a pause.
                await asyncio.sleep(backoff)
            elif not self._queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            else:
                linger = self._queue[0].since + self._flush_interval - time.monotonic()
                if linger > 0 and not self._urgent():
                    self._wakeup.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wakeup.wait(), linger)
                    continue
            batch = self._take()
            records = [r for g in batch for r in g.records]
            try:
                seqs = await asyncio.to_thread(self.store.append_batch, records)
            except Exception as e:  # noqa: BLE001 - any failure: fail closed until a commit succeeds again
                self._failed(batch, e)
                backoff = min(max(2 * backoff, 0.05), 1.0)
                continue
            backoff = 0.0
            self._committed(batch, seqs)

    def _take(self) -> list[_Group]:
        """The groups of the next transaction: oldest first, whole groups, up to _MAX_BATCH records (at least one)."""
        batch, count = [], 0
        while self._queue and (not batch or count + len(self._queue[0].records) <= _MAX_BATCH):
            group = self._queue.popleft()
            batch.append(group)
            count += len(group.records)
            if group.future is not None and not group.lingers:
                self._awaited -= 1
        self._queued -= count
        self._writing, self._writing_count = batch, count
        return batch

    def _committed(self, batch: list[_Group], seqs: list[int | None]) -> None:
        now = time.monotonic()
        lag = now - batch[0].since if batch else 0.0
        if self._failing:
            log.info("audit store writable again", extra={"fields": {"records": len(seqs)}})
        elif lag > self._bound:
            # Requests wait for their records meanwhile: worth knowing, once in a while (not at every commit).
            self._late += 1
            if now - self._late_logged > 10.0:
                log.warning("audit commits later than their bound", extra={"fields": {
                    "lag_ms": round(lag * 1000), "bound_ms": round(self._bound * 1000), "late_commits": self._late}})
                self._late_logged, self._late = now, 0
        self._failing = False
        self._writing, self._writing_count = [], 0
        i = 0
        for group in batch:
            n = len(group.records)
            if group.future is not None and not group.future.done():
                group.future.set_result(seqs[i:i + n])
            i += n

    def _failed(self, batch: list[_Group], error: Exception) -> None:
        """Awaited groups fail now, those queued behind this batch as well (their callers answer UNAVAILABLE rather
        than wait for the next attempt); written-behind ones go back to the head of the queue, in order, to be
        retried: they belong to requests that were let through."""
        if not self._failing:
            log.error("audit append failed", extra={"fields": {"error": type(error).__name__,
                                                               "records": sum(len(g.records) for g in batch)}})
        self._failing = True
        self._writing, self._writing_count = [], 0
        groups = [*batch, *self._queue]
        kept = deque(g for g in groups if g.future is None)
        for group in groups:
            if group.future is not None and not group.future.done():
                group.future.set_exception(AuditUnavailable("the audit store is failing"))
        self._queue, self._awaited = kept, 0
        self._queued = sum(len(g.records) for g in kept)

    async def close(self, timeout: float = 10.0) -> None:
        """Commits everything queued (written-behind records included), then stops the writer. What the store has
        not taken within `timeout` (it is down) is lost: logged with its count."""
        self._closing = True
        if self._writer is None or self._writer.done():
            return
        self._wakeup.set()
        deadline = time.monotonic() + timeout
        while (self._queue or self._writing) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        if self._queue or self._writing:
            log.error("audit records lost at shutdown", extra={"fields": {"records": self.pending}})
            for group in [*self._writing, *self._queue]:
                if group.future is not None and not group.future.done():
                    group.future.set_exception(AuditUnavailable("the auth service is stopping"))
        self._writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._writer
