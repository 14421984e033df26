"""The audit trail: every record chained to the previous by hash; tampering of any kind is found by verify."""

from __future__ import annotations

import asyncio

import pytest
import sqlalchemy as sa
from llmaas.auth.audit import AuditRecord
from llmaas.auth.tables import audit_events

from tests.support.auth_store import audit_log, auth_engine


def _record(i: int, tenant: str = "ten_a") -> AuditRecord:
    return AuditRecord(tenant_id=tenant, key_id=f"k{i % 3}", actor=f"k{i % 3}", action="request.authorized",
                       endpoint="POST /v1/chat/completions", status=200, client_address="127.0.0.1",
                       trace_id="ab" * 16, request_id=f"req-{i}")


@pytest.fixture
def engine(tmp_path):
    return auth_engine(f"sqlite:///{tmp_path / 'auth.db'}")


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


async def test_completed_record_is_unique_per_request(engine):
    log = audit_log(engine)
    done = AuditRecord(tenant_id="ten_a", key_id="k", actor="k", action="request.completed", request_id="r1")
    log.store.append_batch([done])
    with pytest.raises(sa.exc.IntegrityError):
        log.store.append_batch([done])
    assert log.store.verify().ok
