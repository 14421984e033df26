"""The audit trail: every record chained to the previous by hash; tampering of any kind is found by verify."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import sqlalchemy as sa
from llmaas.auth import audit
from llmaas.auth.audit import AuditRecord
from llmaas.auth.tables import audit_events

from tests.support.auth_store import audit_log, auth_engine


def _record(i: int, tenant: str = "ten_a") -> AuditRecord:
    return AuditRecord(tenant_id=tenant, key_id=f"k{i % 3}", actor=f"k{i % 3}", action="request.authorized",
                       endpoint="POST /v1/chat/completions", status=200, client_address="127.0.0.1",
                       trace_id="ab" * 16, request_id=f"req-{i}")


@pytest.fixture
def engine(database_url):
    return auth_engine(database_url)


async def test_concurrent_appends_from_two_replicas_form_one_valid_chain(engine):
    replicas = [audit_log(engine), audit_log(auth_engine(str(engine.url)))]
    seqs = await asyncio.gather(*(replicas[i % 2].append(_record(i)) for i in range(200)))
    assert sorted(seqs) == list(range(1, 201))
    report = replicas[0].store.verify()
    assert report.ok and report.checked == 200
    for r in replicas:
        await r.close()


async def test_tenants_see_only_their_own_records(engine):
    log = audit_log(engine)
    await log.append_many([_record(1, "ten_a"), _record(2, "ten_b"), _record(3, "ten_a")])
    assert [r.record.request_id for r in log.store.list("ten_a")] == ["req-1", "req-3"]
    assert [r.record.request_id for r in log.store.list("ten_b")] == ["req-2"]
    assert [r.seq for r in log.store.list("ten_a", after_seq=1)] == [3]


@pytest.mark.parametrize("tamper", ["edit", "delete", "insert", "truncate"])
async def test_verify_finds_tampering(engine, tamper):
    log = audit_log(engine)
    await log.append_many([_record(i) for i in range(10)])
    with engine.begin() as conn:
        if tamper == "edit":
            conn.execute(audit_events.update().where(audit_events.c.seq == 4).values(status=403))
        elif tamper == "delete":
            conn.execute(audit_events.delete().where(audit_events.c.seq == 4))
        elif tamper == "insert":
            row = conn.execute(sa.select(audit_events).where(audit_events.c.seq == 10)).one()._asdict()
            conn.execute(audit_events.insert().values({**row, "seq": 11}))
        else:
            conn.execute(audit_events.delete().where(audit_events.c.seq == 10))
    report = log.store.verify()
    assert not report.ok
    assert report.first_bad_seq == {"edit": 4, "delete": 4, "insert": 11, "truncate": 10}[tamper]


def _done(request_id: str) -> AuditRecord:
    return AuditRecord(tenant_id="ten_a", key_id="k", actor="k", action="request.completed", request_id=request_id)


async def test_completed_record_is_unique_per_request(engine):
    """A retried request.completed is skipped inside the transaction (None), never an error for the others; the unique
    index stays as the last line of defence."""
    log = audit_log(engine)
    assert log.store.append_batch([_done("r1")]) == [1]
    assert log.store.append_batch([_done("r1")]) == [None]
    assert log.store.append_batch([_record(1), _done("r2"), _done("r1"), _done("r2"), _done("r3")]) == \
        [2, 3, None, None, 4]
    with pytest.raises(sa.exc.IntegrityError), engine.begin() as conn:
        row = conn.execute(sa.select(audit_events).where(audit_events.c.seq == 1)).one()._asdict()
        conn.execute(audit_events.insert().values({**row, "seq": 99}))
    assert [r.record.request_id for r in log.store.list("ten_a") if r.record.action == "request.completed"] == \
        ["r1", "r2", "r3"]
    assert log.store.verify().ok


async def test_awaited_batches_dedupe_in_one_transaction(engine):
    log = audit_log(engine)
    seqs = await log.append_many([_done("a"), _done("b"), _done("a")])
    assert seqs == [1, 2, None]
    assert await log.append_many([_done("b"), _done("c")]) == [None, 3]
    await log.close()


async def test_overlong_values_are_clipped_not_refused(engine):
    log = audit_log(engine)
    await log.append(AuditRecord(tenant_id="t", key_id="sso:" + "x" * 300, actor="a" * 500, action="key.create",
                                 request_id="r" * 200))
    [stored] = log.store.list("t")
    assert len(stored.record.key_id) == 64 and len(stored.record.request_id) == 64
    assert log.store.verify().ok



class _AppendAfterTipRead:
    """A fake engine for the race: the real one, except that right after verify first reads the tip, two records are
    appended and committed (as another replica's write-behind would)."""

    def __init__(self, engine, append) -> None:
        self._engine, self._append, self._done = engine, append, False

    @contextlib.contextmanager
    def connect(self):
        with self._engine.connect() as conn:
            outer = self

            class _Conn:
                def execute(self, statement, *args, **kwargs):
                    result = conn.execute(statement, *args, **kwargs)
                    if statement is audit._TIP and not outer._done:
                        outer._done = True
                        outer._append()
                    return result

            yield _Conn()


async def test_verify_walks_a_chain_that_grows_meanwhile(engine):
    """Records appended while verify walks (after it read the tip) are walked too, never reported as tampering: the
    failed-auth burst e2e test once found its chain "not ok" because denied-request counts kept landing meanwhile."""
    log = audit_log(engine)
    await log.append_many([_record(i) for i in range(10)])
    racing = _AppendAfterTipRead(engine, lambda: log.store.append_batch([_record(100), _record(101)]))
    report = audit.AuditStore(racing).verify(batch=4)
    assert report.ok and report.checked == 12
    assert log.store.verify().checked == 12
