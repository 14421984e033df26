"""The batch store and worker (llmaas.router.batch): the state machine, durability across a killed worker (every line
answered once, billed once, billed what the output says), per-line errors, retries, cancel, expiry, and files'
retention. The chat pipeline is a fake here (FakePipeline); tests/e2e/test_batches.py drives the real one."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace

import grpc
import pytest
from llmaas.common.db import make_engine, migrate
from llmaas.common.errors import ApiError
from llmaas.common.identity import Identity
from llmaas.router.batch import worker as batch_worker
from llmaas.router.batch.crypto import KeyRing
from llmaas.router.batch.files import FileVault
from llmaas.router.batch.store import Store, identity_json
from llmaas.router.batch.worker import BatchWorker
from llmaas.router.pipeline import Usage
from llmaas.router.triton import Delta

MIGRATIONS = batch_worker.__file__.rsplit("/", 1)[0] + "/migrations"
TENANT = "ten_a"


class FakePipeline:
    """Unit-test fake of the chat pipeline's public batch interface, with metering's idempotency: a request id is
    settled once (the first settlement stands), and only if it was reserved."""

    def __init__(self) -> None:
        self.reserved: set[str] = set()
        self.settled: dict[str, tuple[int, int, str]] = {}
        self.records: list[str] = []
        self.backend_outstanding = 0
        self.last_interactive = 0.0
        self.hold: set[int] = set()  # line indexes whose generation waits for `released` (or a kill)
        self.released = asyncio.Event()
        self.drop_settlements = False  # settlements lost in flight (the worker killed before they left)
        self.refuse_next: list[ApiError] = []
        self.delay = 0.0  # seconds each generation takes
        self.key_now: Identity | None | str = "unchanged"  # what auth says of the batch's key now
        self.key_checks = 0

    def caller_for(self, identity, request_id, endpoint, client):
        return SimpleNamespace(identity=identity, request_id=request_id, endpoint=endpoint, client_address=client)

    async def current_identity(self, caller):
        self.key_checks += 1
        return caller.identity if self.key_now == "unchanged" else self.key_now

    async def prepare_for(self, caller, request, *, kind, parse=None):
        assert kind == "batch"
        if self.refuse_next:
            raise self.refuse_next.pop(0)
        if request.model == "missing":
            raise ApiError(grpc.StatusCode.NOT_FOUND, "The model 'missing' does not exist.", param="model",
                           code="model_not_found")
        self.reserved.add(caller.request_id)
        return SimpleNamespace(id="chatcmpl-1", request_id=caller.request_id, created=1, model=request.model,
                               triton_model="t", finish_reason="stop", usage=Usage(), caller=caller, output=None,
                               reasoning=None, choices=(), line=int(caller.request_id.split(":")[1]))

    async def run(self, run):
        if run.line in self.hold:
            await self.released.wait()
        if self.delay:
            await asyncio.sleep(self.delay)
        run.usage = Usage(prompt_tokens=10 + run.line, completion_tokens=3)
        yield Delta(text=f"answer {run.line}", final=True, finish_reason="stop", input_tokens=None,
                    output_tokens=None)

    async def collect(self, run):
        return [[d async for d in self.run(run)]]

    def finish(self, run, billed=True):
        if not billed:
            run.usage = Usage()
        self.settle(run.caller, run.request_id, run.usage, "completed" if run.usage.completion_tokens else "failed")
        self.records.append(run.request_id)

    def settle(self, caller, request_id, usage, outcome):
        if self.drop_settlements or request_id not in self.reserved or request_id in self.settled:
            return
        self.settled[request_id] = (usage.prompt_tokens, usage.completion_tokens, outcome)

    def record(self, caller, model, usage, error, status=200):
        self.records.append(caller.request_id)

    def billed(self) -> tuple[int, int]:
        done = [v for v in self.settled.values() if v[2] == "completed"]
        return sum(v[0] for v in done), sum(v[1] for v in done)


@pytest.fixture
def store(database_url):
    engine = make_engine(database_url)
    migrate(engine, __import__("pathlib").Path(MIGRATIONS))
    return Store(engine)


@pytest.fixture
def vault(store, tmp_path):
    return FileVault(tmp_path / "files", KeyRing(b"m" * 32), store, retention_seconds=3600)


def line(i: int, model: str = "m", **extra) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": f"canary {i}"}], **extra}}


def make_batch(store, vault, lines: list[dict], *, expires_in: int = 3600, tenant: str = TENANT) -> str:
    data = b"".join(json.dumps(x).encode() + b"\n" for x in lines)
    file_row = vault.create(tenant, "batch", "in.jsonl", data, len(lines))
    now = int(time.time())
    batch_id = f"batch_{now}{len(lines)}{time.monotonic_ns() % 100000}"
    store.add_batch({"id": batch_id, "tenant_id": tenant, "key_id": "key_1",
                     "identity": identity_json(Identity(tenant, "key_1")), "client_address": "1.2.3.4",
                     "endpoint": "/v1/chat/completions", "input_file_id": file_row["id"], "completion_window": "24h",
                     "status": "validating", "created_at": now, "expires_at": now + expires_in,
                     "total": len(lines)}, len(lines))
    return batch_id


def worker(store, vault, pipeline, owner="w1", **kw) -> BatchWorker:
    return BatchWorker(store, vault, pipeline, embeddings=None, owner=owner, concurrency=3, lease_seconds=5,
                       poll_seconds=0.05, **kw)


async def run_until(store, batch_id, w, statuses=("completed", "failed", "expired", "cancelled"), timeout=10.0):
    task = asyncio.create_task(w.run())
    try:
        deadline = time.monotonic() + timeout
        while (b := store.get_batch(batch_id))["status"] not in statuses:
            assert time.monotonic() < deadline, b["status"]
            await asyncio.sleep(0.02)
        return b
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


def read_jsonl(vault, file_id) -> list[dict]:
    return [json.loads(x) for x in vault.read(TENANT, file_id).splitlines()] if file_id else []


async def test_a_batch_runs_to_completed_with_outputs_in_openais_format(store, vault):
    pipeline = FakePipeline()
    batch_id = make_batch(store, vault, [line(i) for i in range(7)])
    b = await run_until(store, batch_id, worker(store, vault, pipeline))
    assert b["status"] == "completed" and b["in_progress_at"] and b["finalizing_at"] and b["completed_at"]
    assert (b["total"], b["completed"], b["failed"]) == (7, 7, 0)
    out = read_jsonl(vault, b["output_file_id"])
    assert [o["custom_id"] for o in out] == [f"req-{i}" for i in range(7)]
    first = out[0]
    assert first["error"] is None and first["response"]["status_code"] == 200
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "answer 0"
    assert first["response"]["request_id"] == f"{batch_id}:0:1"
    assert b["error_file_id"] is None
    usage = [o["response"]["body"]["usage"] for o in out]
    assert pipeline.billed() == (sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage))
    assert (b["prompt_tokens"], b["completion_tokens"]) == pipeline.billed()
    assert store.lines(batch_id) == []  # results live in the output file now


async def test_a_killed_worker_resumes_every_line_once_billed_once(store, vault):
    pipeline = FakePipeline()
    batch_id = make_batch(store, vault, [line(i) for i in range(12)])
    pipeline.hold = {4, 5}
    w1 = worker(store, vault, pipeline)
    task = asyncio.create_task(w1.run())
    deadline = time.monotonic() + 5
    while len([s for s in store.lines(batch_id) if s.state == "done"]) < 6:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # The worst moment: results committed whose settlements never left the process.
    pipeline.drop_settlements = True
    await asyncio.sleep(0.1)
    task.cancel()  # killed: lines 4 and 5 are left running, some results are committed but unbilled
    await asyncio.gather(task, return_exceptions=True)
    pipeline.drop_settlements = False
    states = {s.line: s for s in store.lines(batch_id)}
    assert states[4].state == "running" or states[5].state == "running"
    held = [bl for bl in (4, 5) if states[bl].state == "running"]
    pipeline.hold = set()

    b = await run_until(store, batch_id, worker(store, vault, pipeline, owner="w2"))
    assert b["status"] == "completed" and b["completed"] == 12
    out = read_jsonl(vault, b["output_file_id"])
    assert sorted(o["custom_id"] for o in out) == sorted(f"req-{i}" for i in range(12))  # every line, once
    # A held line ran again under its next attempt; its first attempt was released, never billed.
    for i in held:
        assert next(o for o in out if o["custom_id"] == f"req-{i}")["response"]["request_id"] == f"{batch_id}:{i}:2"
        assert f"{batch_id}:{i}:1" not in pipeline.settled or pipeline.settled[f"{batch_id}:{i}:1"][:2] == (0, 0)
    usage = [o["response"]["body"]["usage"] for o in out]
    assert pipeline.billed() == (sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage))


async def test_a_key_revoked_mid_batch_runs_no_more_lines(store, vault, monkeypatch):
    monkeypatch.setattr(batch_worker, "KEY_CHECK_SECONDS", 0.0)  # every line asks auth (the bound is 2 s)
    pipeline = FakePipeline()
    batch_id = make_batch(store, vault, [line(i) for i in range(8)])
    pipeline.hold = {3}
    task = asyncio.create_task(worker(store, vault, pipeline).run())
    deadline = time.monotonic() + 5
    while len([s for s in store.lines(batch_id) if s.state == "done"]) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    # Kill the worker while line 3 is still held (releasing it first would let it finish before the cancel lands),
    # then revoke: at least line 3 is left for the next worker, which must refuse it.
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    pipeline.key_now = None  # revoked
    pipeline.hold = set()
    pipeline.released.set()
    b = await run_until(store, batch_id, worker(store, vault, pipeline, owner="w2"))
    assert b["status"] == "completed"
    errors = [e for e in read_jsonl(vault, b["error_file_id"]) if e["response"]]
    refused = [e for e in errors if e["response"]["body"]["error"]["code"] == "invalid_api_key"]
    assert refused and all(e["response"]["status_code"] == 401 for e in refused)
    out = read_jsonl(vault, b["output_file_id"])
    assert len(out) + len(refused) == 8 and len(out) >= 2
    # The refused lines reserved nothing: only the served ones are billed.
    usage = [o["response"]["body"]["usage"] for o in out]
    assert pipeline.billed() == (sum(u["prompt_tokens"] for u in usage), sum(u["completion_tokens"] for u in usage))


async def test_a_keys_new_permissions_apply_to_the_lines_still_to_run(store, vault):
    pipeline = FakePipeline()
    narrowed = Identity(TENANT, "key_1", models=("other-model",))
    pipeline.key_now = narrowed
    seen = []
    prepare = pipeline.prepare_for

    async def prepare_recording(caller, request, **kw):
        seen.append(caller.identity)
        return await prepare(caller, request, **kw)

    pipeline.prepare_for = prepare_recording
    batch_id = make_batch(store, vault, [line(i) for i in range(3)])
    b = await run_until(store, batch_id, worker(store, vault, pipeline))
    assert b["status"] == "completed" and seen == [narrowed] * 3
    assert pipeline.key_checks == 1  # one check per key within KEY_CHECK_SECONDS


async def test_bad_lines_are_answered_in_the_error_file(store, vault):
    pipeline = FakePipeline()
    batch_id = make_batch(store, vault, [line(0), line(1, model="missing"), line(2, temperature="hot"), line(3),
                                         line(4, temprature=0.5)])
    b = await run_until(store, batch_id, worker(store, vault, pipeline))
    assert b["status"] == "completed" and (b["completed"], b["failed"]) == (2, 3)
    errors = {e["custom_id"]: e for e in read_jsonl(vault, b["error_file_id"])}
    assert errors["req-1"]["response"]["status_code"] == 404
    assert errors["req-1"]["response"]["body"]["error"]["code"] == "model_not_found"
    assert errors["req-2"]["response"]["status_code"] == 400
    assert errors["req-2"]["response"]["body"]["error"]["code"] == "invalid_request_body"
    # A misspelled field is refused as the edge refuses it interactively, not dropped.
    assert errors["req-4"]["response"]["body"]["error"] == {
        "message": "Unrecognized request argument supplied: temprature", "type": "invalid_request_error",
        "param": "temprature", "code": "unknown_parameter"}
    assert [o["custom_id"] for o in read_jsonl(vault, b["output_file_id"])] == ["req-0", "req-3"]


async def test_a_rate_limited_line_waits_and_runs_again(store, vault):
    pipeline = FakePipeline()
    pipeline.refuse_next = [ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Rate limit exceeded", code="rate_limited",
                                     headers=(("retry-after", "0"),))]
    batch_id = make_batch(store, vault, [line(i) for i in range(3)])
    b = await run_until(store, batch_id, worker(store, vault, pipeline))
    assert (b["status"], b["completed"], b["failed"]) == ("completed", 3, 0)


async def test_cancel_stops_dispatching_and_finalizes_what_is_done(store, vault):
    pipeline = FakePipeline()
    pipeline.hold = set(range(2, 20))  # lines 0-1 finish; the rest wait, so cancel arrives before they are dispatched
    batch_id = make_batch(store, vault, [line(i) for i in range(20)])
    w = worker(store, vault, pipeline)
    task = asyncio.create_task(w.run())
    deadline = time.monotonic() + 5
    while not any(s.state == "running" and s.line == 2 for s in store.lines(batch_id)):
        assert time.monotonic() < deadline
        await asyncio.sleep(0.01)
    assert store.request_cancel(TENANT, batch_id, int(time.time()))["status"] == "cancelling"
    w.notify(batch_id, cancel=True)
    pipeline.released.set()  # the worker waits for what it had dispatched
    try:
        while (b := store.get_batch(batch_id))["status"] != "cancelled":
            assert time.monotonic() < deadline + 5
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert b["cancelled_at"] and b["cancelling_at"]
    done = read_jsonl(vault, b["output_file_id"])
    never = [e for e in read_jsonl(vault, b["error_file_id"]) if e["response"] is None]
    assert all(e["error"]["code"] == "batch_cancelled" for e in never)
    assert len(done) + len(never) + b["failed"] == 20 and len(never) > 0
    assert {"req-0", "req-1", "req-2"} <= {o["custom_id"] for o in done}  # what was dispatched is answered


async def test_an_expired_window_delivers_what_was_done(store, vault):
    pipeline = FakePipeline()
    batch_id = make_batch(store, vault, [line(i) for i in range(5)], expires_in=-1)
    b = await run_until(store, batch_id, worker(store, vault, pipeline))
    assert b["status"] == "expired" and b["expired_at"]
    errors = read_jsonl(vault, b["error_file_id"])
    assert [e["error"]["code"] for e in errors] == ["batch_expired"] * 5
    assert pipeline.settled == {}


async def test_a_lost_input_file_fails_the_batch(store, vault):
    batch_id = make_batch(store, vault, [line(0)])
    vault.delete(TENANT, store.get_batch(batch_id)["input_file_id"])
    b = await run_until(store, batch_id, worker(store, vault, FakePipeline()))
    assert b["status"] == "failed" and json.loads(b["errors"])["data"][0]["code"] == "invalid_input_file"


def test_a_lease_keeps_a_batch_to_one_worker(store, vault):
    batch_id = make_batch(store, vault, [line(0)])
    assert store.claim("w1", 30)["id"] == batch_id
    assert store.claim("w2", 30) is None  # held
    assert store.claim("w1", 30)["id"] == batch_id  # its own, again (a restarted router)
    assert store.claim("w2", 30, now=time.time() + 31)["id"] == batch_id  # lapsed: taken over
    assert not store.renew(batch_id, "w1", 30)


def test_files_are_tenant_scoped_and_deletion_removes_the_bytes(store, vault):
    row = vault.create(TENANT, "batch", "a.jsonl", b"canary-bytes")
    path = vault.path(row["id"])
    assert b"canary-bytes" not in path.read_bytes()
    assert store.get_file("ten_other", row["id"]) is None
    assert not vault.delete("ten_other", row["id"]) and path.exists()
    assert vault.delete(TENANT, row["id"])
    assert not path.exists() and store.get_file(TENANT, row["id"]) is None


def test_retention_deletes_expired_files_and_orphans(store, vault):
    old = vault.create(TENANT, "batch", "old.jsonl", b"x")
    kept = vault.create(TENANT, "batch", "new.jsonl", b"y")
    store.set_file_expiry(old["id"], int(time.time()) - 1)
    orphan = vault.path("file-orphan")
    orphan.write_bytes(b"z")
    __import__("os").utime(orphan, (0, 0))
    assert vault.sweep() == 2
    assert not vault.path(old["id"]).exists() and store.get_file(TENANT, old["id"]) is None
    assert not orphan.exists()
    assert vault.read(TENANT, kept["id"]) == b"y"



async def test_the_batch_yields_to_interactive_traffic_but_still_progresses(store, vault):
    pipeline = FakePipeline()
    pipeline.last_interactive = time.monotonic() + 3600  # interactive requests keep arriving
    batch_id = make_batch(store, vault, [line(i) for i in range(6)])
    task = asyncio.create_task(worker(store, vault, pipeline).run())
    try:
        await asyncio.sleep(1.5)
        done = [s for s in store.lines(batch_id) if s.state == "done"]
        assert 1 <= len(done) <= 2  # one line per MIN_PROGRESS_SECONDS, not the full concurrency
        pipeline.last_interactive = 0.0  # quiet again: full speed
        deadline = time.monotonic() + 5
        while store.get_batch(batch_id)["status"] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_lost_lease_stops_that_batch_not_the_worker(store, vault):
    pipeline = FakePipeline()
    pipeline.hold = {0}
    first = make_batch(store, vault, [line(0), line(1)])
    task = asyncio.create_task(worker(store, vault, pipeline).run())
    try:
        deadline = time.monotonic() + 5
        while not any(s.state == "running" for s in store.lines(first)):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        # Another worker took the batch over (this one's lease lapsed, say during a long pause).
        store.update_batch(first, lease_owner="w-other", lease_until=time.time() + 3600)
        await asyncio.sleep(2.0)  # the worker's next renewal (every lease/3) finds the lease gone
        pipeline.released.set()
        second = make_batch(store, vault, [line(0)])
        while store.get_batch(second)["status"] != "completed":
            assert time.monotonic() < deadline + 5 and not task.done()
            await asyncio.sleep(0.05)
        assert store.get_batch(first)["lease_owner"] == "w-other"
        assert store.get_batch(first)["status"] == "in_progress"  # left to its new owner
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_tenants_big_batch_does_not_hold_up_another_tenants(store, vault):
    pipeline = FakePipeline()
    pipeline.delay = 0.02
    big = make_batch(store, vault, [line(i) for i in range(100)])
    small = make_batch(store, vault, [line(i) for i in range(3)], tenant="ten_b")
    task = asyncio.create_task(worker(store, vault, pipeline).run())
    try:
        deadline = time.monotonic() + 10
        while store.get_batch(small)["status"] != "completed":
            assert time.monotonic() < deadline
            await asyncio.sleep(0.02)
        assert store.get_batch(big)["status"] == "in_progress"  # both ran side by side
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
