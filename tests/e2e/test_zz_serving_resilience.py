"""Serving that does not break, on a stack of its own with two Triton replicas (it kills processes): a model's backend
stub killed (on one replica: nobody notices; on every replica: fast 503s, then the catalog reloads it), a whole Triton
replica killed under load (no failed request; streams on it end with an error event and [DONE]; the supervisor
brings it back), and clients that go away (their Triton request stops, their reservation is settled at once).
Prints the measured times (pytest -s shows them)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import time
import urllib.request
from pathlib import Path

import grpc
import httpx
import pytest
from llmaas.catalog.served import REPORT_GRACE_SECONDS
from llmaas.router.status import STATUS_DELAY_SECONDS
from llmaas.router.triton import TritonReplica
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.e2e.test_metering import admin, new_key, new_tenant, usage
from tests.support.stack import TEST_MODEL, live_pids, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

SLOW_MODEL = "llmaas-test:slow"  # one sequence at a time, 40 ms per token (tests/e2e/model_repository)
WORDS = " ".join(f"word{i}" for i in range(150))  # the slow model echoes them: a stream of ~150 tokens, ~6 s


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("resilience") / "data", "--triton-replicas", "2",
                       "--no-jaeger") as s:
        yield s


@pytest.fixture(scope="module")
def key(stack) -> tuple[str, str]:
    tenant_id = new_tenant(stack, "resilience")
    # These tests measure failover, not the rate limiter: the module sends about 1,000 requests within a minute,
    # tier 1's limit (a 429 in the load seen once).
    admin(stack, "PUT", f"/tenants/{tenant_id}/tier", json={"tier": "monthly"})
    return tenant_id, new_key(stack, tenant_id)[1]


def _stack_file(stack) -> dict:
    return json.loads((Path(stack["data_dir"]) / "stack.json").read_text())


def _children(pid: int) -> list[int]:
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(entry.name))
    return out


def stub_pid(triton_pid: int, triton_model: str) -> int | None:
    """The Python backend stub that runs `triton_model` for the tritonserver process `triton_pid`."""
    for child in _children(triton_pid):
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "triton_python_backend_stub" in cmdline and f"/{triton_model}/" in cmdline:
            return child
    return None


def stub_pids(stack, triton_model: str, within: float = 30.0) -> list[int | None]:
    """The model's stub on each Triton replica, waiting while one is not there: an earlier test's reload (the catalog
    reloads a model whose stub died, and may do so twice) can leave a replica briefly without one, and a restarted
    tritonserver has another pid than the fixture's (live_pids)."""
    deadline = time.monotonic() + within
    while True:
        pids = live_pids(stack)
        found = [stub_pid(pids[name], triton_model) for name in ("triton", "triton-2")]
        if None not in found or time.monotonic() > deadline:
            return found
        time.sleep(0.2)


def chat(i: int, model: str = TEST_MODEL, **extra) -> dict:
    return {"model": model, "messages": [{"role": "user", "content": f"Please count the apples in basket {i}."}],
            "max_tokens": 12, **extra}


def models(client: httpx.Client) -> set[str]:
    return {m["id"] for m in client.get("/models").json()["data"]}


def served_requests(stack, replica: int) -> int:
    """Successful inferences Triton replica `replica` (0-based) counted (its Prometheus metrics)."""
    text = urllib.request.urlopen(stack["triton_replicas"][replica]["metrics"], timeout=5).read().decode()
    return int(sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("nv_inference_request_success{")))


def answers_directly(stack, replica: int, triton_model: str) -> bool:
    """Whether the model on Triton replica `replica` (0-based) generates, asked directly (ModelReady cannot tell)."""
    async def ask() -> bool:
        client = TritonReplica(stack["triton_replicas"][replica]["grpc"])
        try:
            return await asyncio.wait_for(client.canary(triton_model), 5) is True
        finally:
            await client.close()
    return asyncio.run(ask())


def test_a_stub_killed_on_one_replica_is_invisible_to_clients_and_reloaded(stack, key):
    _, api_key = key
    # Failover needs the other replica in rotation: right after start-up the catalog may not list it yet (CI once
    # got a 503 here, the request failing on the killed stub with nowhere else to go).
    both_replicas_serve(stack, api_key)
    model = "llmaas-test-deterministic"
    pid = stub_pids(stack, model)[0]
    assert pid is not None
    with httpx.Client(base_url=stack["base_url"], headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        assert c.post("/chat/completions", json=chat(0)).status_code == 200
        os.kill(pid, signal.SIGKILL)
        killed, statuses, recovered = time.monotonic(), [], None
        failures = []
        while time.monotonic() - killed < 30:
            r = c.post("/chat/completions", json=chat(len(statuses)))
            statuses.append(r.status_code)
            if r.status_code != 200:
                failures.append(f"{time.monotonic() - killed:.2f} s after the kill: {r.status_code} {r.text[:300]}")
            if len(statuses) % 5 == 0 and answers_directly(stack, 0, model):
                recovered = time.monotonic() - killed
                break
        assert set(statuses) == {200}, (statuses, failures)  # the other replica answered meanwhile
        assert recovered is not None, "the model was not reloaded on the replica where it died"
        print(f"\none of two stubs killed: {len(statuses)} requests, 0 failed; reloaded in {recovered:.1f} s")


def test_a_model_dead_everywhere_gets_fast_503s_leaves_the_list_and_comes_back(stack, key):
    _, api_key = key
    both_replicas_serve(stack, api_key)
    time.sleep(REPORT_GRACE_SECONDS)  # reports right after a reload are taken for the instance it replaced
    model = "llmaas-test-deterministic"
    pids = stub_pids(stack, model)
    assert None not in pids
    with httpx.Client(base_url=stack["base_url"], headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        assert TEST_MODEL in models(c)
        for pid in pids:
            os.kill(pid, signal.SIGKILL)
        killed = time.monotonic()
        first_503 = None
        failures, unlisted_at, relisted_at, outcomes = 0, None, None, []
        while time.monotonic() - killed < 60:
            t0 = time.monotonic()
            r = c.post("/chat/completions", json=chat(len(outcomes)))
            outcomes.append((r.status_code, time.monotonic() - t0))
            if r.status_code == 200 and first_503 is not None:
                break
            assert r.status_code == 503, r.text
            failures += 1
            body = r.json()["error"]
            assert body["code"] == "model_unavailable" and body["type"] and "message" in body
            assert int(r.headers["retry-after"]) >= 1
            if first_503 is None:
                first_503 = time.monotonic() - killed
            listed = TEST_MODEL in models(c)
            if not listed and unlisted_at is None:
                unlisted_at = time.monotonic() - killed
            if listed and unlisted_at is not None and relisted_at is None:
                relisted_at = time.monotonic() - killed
            time.sleep(0.2)
        recovered = time.monotonic() - killed
        assert outcomes[-1][0] == 200, outcomes
        # Fast: the first request notices (Triton's "stub not healthy" takes ~1 s), later ones are refused at once.
        assert first_503 is not None and first_503 < 3.0
        assert max(t for s, t in outcomes[1:-1]) < 1.0 if len(outcomes) > 2 else True
        assert unlisted_at is not None and unlisted_at < 3.0  # out of /v1/models while down
        assert recovered < 20
        assert TEST_MODEL in models(c)
        # Listed again means served again: at most a probe later.
        assert relisted_at is None or recovered - relisted_at < 1.5, (relisted_at, recovered)
        print(f"\nstub killed on every replica: first 503 after {first_503:.2f} s, out of /v1/models after "
              f"{unlisted_at:.2f} s, served again after {recovered:.1f} s, {failures} requests refused with 503 "
              f"meanwhile (each in {max(t for _, t in outcomes[1:-1] or [(0, 0)]) * 1000:.0f} ms or less)")


def both_replicas_serve(stack, api_key: str, within: float = 60) -> None:
    """Waits until requests reach both replicas again (an earlier test's recovery may still be under way)."""
    before = [served_requests(stack, i) for i in (0, 1)]
    deadline = time.monotonic() + within
    with httpx.Client(base_url=stack["base_url"], headers={"Authorization": f"Bearer {api_key}"}, timeout=30) as c:
        while time.monotonic() < deadline:
            c.post("/chat/completions", json=chat(0))
            if all(served_requests(stack, i) > n for i, n in enumerate(before)):
                return
            time.sleep(0.1)
    raise AssertionError("requests do not reach both replicas")


def quiet_usage(stack, tenant_id: str) -> dict:
    """The tenant's usage once the last requests are settled: settlement runs after the response, so a read right
    after one can miss it (both_replicas_serve's last request, counted later, would look like one too many)."""
    total, deadline = usage(stack, tenant_id)["total"], time.monotonic() + 10
    while time.monotonic() < deadline:
        time.sleep(0.3)
        total, previous = usage(stack, tenant_id)["total"], total
        if total == previous:
            break
    return total


async def test_a_triton_replica_killed_under_load_fails_no_request(stack, key):
    tenant_id, api_key = key
    both_replicas_serve(stack, api_key)
    before = quiet_usage(stack, tenant_id)
    statuses: list[int] = []
    stream_ends: list[dict] = []
    stop = asyncio.Event()
    victim = stack["pids"]["triton-2"]

    async def load(client: httpx.AsyncClient, w: int):
        i = 0
        while not stop.is_set():
            r = await client.post("/chat/completions", json=chat(w * 10_000 + i))
            statuses.append(r.status_code)
            i += 1

    async def stream(client: httpx.AsyncClient, n: int, started: asyncio.Event):
        body = {"model": SLOW_MODEL, "stream": True, "max_tokens": 150, "stream_options": {"include_usage": True},
                "messages": [{"role": "user", "content": f"Stream {n}: {WORDS}"}]}
        events, chunks = [], 0
        async with client.stream("POST", "/chat/completions", json=body) as r:
            assert r.status_code == 200
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    events.append(line[6:])
                    if '"content"' in line and '"content":""' not in line:
                        chunks += 1
                        started.set()
        stream_ends.append({"events": events, "chunks": chunks})

    limits = httpx.Limits(max_connections=16)
    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=60, limits=limits,
                                 headers={"Authorization": f"Bearer {api_key}"}) as client:
        # One stream per replica: the second starts once the first is running, so the least loaded replica is the
        # other one; the load starts after both.
        streams = []
        for n in range(2):
            started = asyncio.Event()
            streams.append(asyncio.create_task(stream(client, n, started)))
            await asyncio.wait_for(started.wait(), 30)
        loaders = [asyncio.create_task(load(client, w)) for w in range(4)]
        await asyncio.sleep(1.0)
        os.kill(victim, signal.SIGKILL)
        killed, ok_at_kill = time.monotonic(), len(statuses)
        await asyncio.gather(*streams)
        # Load goes on until the supervisor restarted the replica and it serves again.
        back = None
        while time.monotonic() - killed < 90:
            await asyncio.sleep(0.5)
            pids = _stack_file(stack)["pids"]
            if pids.get("triton-2") not in (None, victim):
                try:
                    if served_requests(stack, 1) > 0:
                        back = time.monotonic() - killed
                        break
                except OSError:
                    pass
        stop.set()
        await asyncio.gather(*loaders)
    assert set(statuses) == {200}, {s: statuses.count(s) for s in set(statuses)}
    assert len(statuses) > ok_at_kill + 20
    assert back is not None, "the killed replica did not come back into rotation"
    cut = [s for s in stream_ends if any('"error"' in e for e in s["events"])]
    whole = [s for s in stream_ends if s not in cut]
    assert len(cut) == 1 and len(whole) == 1, [s["events"][-3:] for s in stream_ends]
    events = cut[0]["events"]
    assert events[-1] == "[DONE]" and json.loads(events[-2])["error"]["code"] == "backend_unavailable"
    assert cut[0]["chunks"] > 0  # it had started: the error comes in-band, after content
    # Metering settled what was delivered: the cut stream's chunks (one token each), the whole one's usage.
    whole_usage = json.loads(next(e for e in reversed(whole[0]["events"]) if '"usage"' in e
                                  and json.loads(e).get("usage")))["usage"]
    deadline = time.monotonic() + 30
    # `requests` counts the served requests (the load and the whole stream); the cut stream is counted as failed.
    expected_requests = int(before.get("requests", 0)) + len(statuses) + 1
    expected_failed = int(before.get("failed_requests", 0)) + 1
    while time.monotonic() < deadline:
        after = usage(stack, tenant_id)["total"]
        if int(after.get("requests", 0)) >= expected_requests and int(after.get("failed_requests", 0)) >= expected_failed:
            break
        time.sleep(0.5)
    after = usage(stack, tenant_id)["total"]
    assert int(after["requests"]) == expected_requests
    assert int(after.get("failed_requests", 0)) == expected_failed
    completion = int(after["completion_tokens"]) - int(before.get("completion_tokens", 0))
    load_completion = completion - whole_usage["completion_tokens"]
    assert load_completion >= cut[0]["chunks"] + len(statuses)  # every load request produced at least one token
    print(f"\ntriton-2 killed under load: {len(statuses)} requests, 0 failed; back in rotation after {back:.1f} s; "
          f"the stream it carried ended with an error event after {cut[0]['chunks']} chunks")


def _all_settled(total: dict) -> int:
    """Settled requests whatever their outcome (`requests` counts the served ones only)."""
    return sum(int(total.get(k, 0)) for k in ("requests", "failed_requests", "cancelled_requests"))


def _settled(stack, tenant_id: str, count: int, within: float) -> float | None:
    t0 = time.monotonic()
    while time.monotonic() - t0 < within:
        if _all_settled(usage(stack, tenant_id)["total"]) >= count:
            return time.monotonic() - t0
        time.sleep(0.1)
    return None


def _slow_first_token(stack, api_key: str) -> float:
    """Seconds to the first content of a new slow-model stream: small unless an earlier request still occupies the
    model (it runs one sequence at a time)."""
    body = {"model": SLOW_MODEL, "stream": True, "max_tokens": 3,
            "messages": [{"role": "user", "content": "How long until the first word?"}]}
    t0 = time.monotonic()
    with httpx.stream("POST", stack["base_url"] + "/chat/completions", json=body, timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"}) as r:
        for line in r.iter_lines():
            if '"content"' in line and '"content":""' not in line:
                return time.monotonic() - t0
    return time.monotonic() - t0


@pytest.mark.parametrize("path", ["rest-stream", "rest-unary", "grpc-stream-first-chunk", "grpc-unary"])
def test_a_client_gone_stops_the_work_and_settles_at_once(stack, path):
    tenant_id = new_tenant(stack, "gone")
    _, api_key = new_key(stack, tenant_id)
    body = {"model": SLOW_MODEL, "max_tokens": 150, "messages": [{"role": "user", "content": f"Go: {WORDS}"}]}
    headers = {"Authorization": f"Bearer {api_key}"}
    if path == "rest-stream":
        with httpx.stream("POST", stack["base_url"] + "/chat/completions", json={**body, "stream": True},
                          headers=headers, timeout=60) as r:
            for line in r.iter_lines():
                if '"content"' in line and '"content":""' not in line:
                    break  # leave after the first token: the connection closes
    elif path == "rest-unary":
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(stack["base_url"] + "/chat/completions", json=body, headers=headers, timeout=1.0)
    else:
        with grpc.insecure_channel(stack["services"]["router"]) as channel:
            stub = router_pb2_grpc.RouterServiceStub(channel)
            request = router_pb2.CreateChatCompletionRequest(model=SLOW_MODEL, max_tokens=150)
            request.messages.add(role="user").content.string_value = f"Go: {WORDS}"
            md = (("authorization", f"Bearer {api_key}"),)
            if path == "grpc-stream-first-chunk":
                call = stub.StreamChatCompletion(request, metadata=md, timeout=60)
                next(call)  # the role chunk, sent before the model's first output
                call.cancel()
            else:
                with pytest.raises(grpc.RpcError) as e:
                    stub.CreateChatCompletion(request, metadata=md, timeout=1.0)
                assert e.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    took = _settled(stack, tenant_id, 1, within=10)
    assert took is not None, "the reservation was not settled"
    total = usage(stack, tenant_id)["total"]
    # A stream is settled with what was produced until the client left, not the whole answer (nothing yet for a
    # caller gone at the role chunk, sent before the model's first output). A non-streamed answer comes whole from
    # the backend, with its counts (llmaas.router.triton `whole`): a client gone before it is billed nothing.
    produced = int(total.get("completion_tokens", 0))
    if path == "rest-stream":
        assert 0 < produced < 150
    else:
        assert produced == 0
    # The slow model runs one sequence at a time: had the abandoned request kept generating (~6 s), this would wait.
    first = _slow_first_token(stack, api_key)
    assert first < 2.0, f"the abandoned request still occupied the model ({first:.1f} s to the next first token)"
    time.sleep(1.0)
    after = usage(stack, tenant_id)["total"]
    # Settled exactly once, as cancelled (the client left), and the probe (which leaves at its first token too).
    assert _all_settled(after) == 2 and int(after.get("cancelled_requests", 0)) == 2, after
    print(f"\n{path}: settled {took:.2f} s after the client left, with {total.get('completion_tokens', 0)} completion "
          f"tokens; next first token after {first:.2f} s")


def _status_of(stack, model: str) -> dict:
    r = httpx.get(stack["base_url"] + "/status", timeout=10)
    assert r.status_code == 200, r.text
    return next(m for m in r.json()["data"] if m["id"] == model)


def test_status_shows_a_killed_triton_replica_within_its_delay(stack, key):
    """GET /v1/status names the killed replica (by its position: 2) within STATUS_DELAY_SECONDS, and is clear again
    once the supervisor restarted it and the catalog sees the model served there."""
    both_replicas_serve(stack, key[1])
    deadline = time.monotonic() + 30
    while (model := _status_of(stack, TEST_MODEL)).get("incidents") or model["replicas_serving"] < 2:
        assert time.monotonic() < deadline, model  # an earlier test's incident still clearing
        time.sleep(0.5)
    assert model["replicas"] == 2 and model["replicas_serving"] == 2 and model["status"] == "operational"
    os.kill(_stack_file(stack)["pids"]["triton-2"], signal.SIGKILL)
    killed, shown = time.monotonic(), None
    while time.monotonic() - killed < 30:
        model = _status_of(stack, TEST_MODEL)
        if any(i["replica"] == 2 for i in model.get("incidents", [])):
            shown = time.monotonic() - killed
            break
        time.sleep(0.2)
    assert shown is not None and shown <= STATUS_DELAY_SECONDS, (shown, model)
    assert model["status"] == "degraded" and model["replicas_serving"] == 1
    assert {i["kind"] for i in model["incidents"]} <= {"replica_down", "model_reloading"}
    cleared = None
    while time.monotonic() - killed < 120:
        model = _status_of(stack, TEST_MODEL)
        if not model.get("incidents") and model["replicas_serving"] == 2:
            cleared = time.monotonic() - killed
            break
        time.sleep(0.5)
    assert cleared is not None, model
    print(f"\ntriton-2 killed: in /v1/status after {shown:.1f} s, cleared after {cleared:.1f} s")
