"""The router's replica pool: least outstanding requests, ejection with half-open probes, retries before anything
reached the client, an honest 503 when no replica is in rotation."""

from __future__ import annotations

import asyncio

import grpc
import pytest
from llmaas.common.errors import ApiError
from llmaas.router import breaker as breaker_module
from llmaas.router import replicas as replicas_module
from llmaas.router.replicas import ReplicaPool
from llmaas.router.triton import Delta, ReplicaFailure


class FakeReplica:
    """A fake Triton replica (unit tests only): `mode` decides how its next generations go."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.mode = "ok"  # ok | down | model_down | fail_after_first | bad_request | slow
        self.ready = True
        self.calls = 0
        self.release = asyncio.Event()

    async def generate(self, model, prompt, sampling, request_id, whole=False):
        self.calls += 1
        if self.mode == "down":
            raise ReplicaFailure("UNAVAILABLE: connection refused", model_level=False)
        if self.mode == "model_down":
            raise ReplicaFailure("Stub process 'm_0_0' is not healthy.", model_level=True)
        if self.mode == "bad_request":
            raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "bad", code="invalid_value")
        if self.mode == "slow":
            await self.release.wait()
        yield Delta(f"{self.address}:a", None, 3, 1, False)
        if self.mode == "fail_after_first":
            raise ReplicaFailure("UNAVAILABLE: reset", model_level=False)
        yield Delta("b", "stop", 3, 1, True)

    async def server_ready(self) -> bool:
        return self.ready

    async def canary(self, model: str) -> bool | None:
        return self.ready

    async def close(self) -> None:
        pass


@pytest.fixture
def pool(monkeypatch):
    monkeypatch.setattr(breaker_module, "FIRST_COOL_DOWN", 0.02)
    # Ties go to the first replica listed (random in production): the tests know which replica is tried first.
    monkeypatch.setattr(replicas_module.random, "choice", lambda candidates: candidates[0])
    replicas: dict[str, FakeReplica] = {}

    def factory(address: str) -> FakeReplica:
        replicas[address] = FakeReplica(address)
        return replicas[address]

    p = ReplicaPool(factory, on_model_failure=lambda address, model: _reported(p, address, model))
    p.fakes = replicas
    p.reported = []
    for address in ENDPOINTS:
        p.replica(address)
    return p


ENDPOINTS = ("t1:1", "t2:1")


async def _reported(pool, address: str, model: str) -> None:
    pool.reported.append((address, model))


async def texts(pool: ReplicaPool, *, buffered: bool, endpoints=ENDPOINTS) -> list[str]:
    return [d.text async for d in pool.generate(endpoints, "m", "p", {}, "rid", buffered=buffered,
                                                public_model="model:1")]


async def test_least_outstanding_requests_wins(pool):
    for fake in pool.fakes.values():
        fake.mode = "slow"
    pending = [asyncio.create_task(texts(pool, buffered=True)) for _ in range(4)]
    await asyncio.sleep(0.01)
    assert [f.calls for f in pool.fakes.values()] == [2, 2]  # never 3 on one while the other has 1
    for fake in pool.fakes.values():
        fake.release.set()
    await asyncio.gather(*pending)


@pytest.mark.parametrize("mode", ["down", "model_down", "fail_after_first"])
async def test_a_failed_replica_is_ejected_and_a_buffered_request_served_by_another(pool, mode):
    pool.fakes["t1:1"].mode = mode
    pool.fakes["t1:1"].ready = False
    results = [await texts(pool, buffered=True) for _ in range(6)]
    assert all(r == ["t2:1:a", "b"] for r in results)  # no client saw the failure, nor a partial answer twice
    assert pool.fakes["t1:1"].calls == 1  # ejected after its first failure
    assert not pool.in_rotation("t1:1", "m")


async def test_a_stream_is_retried_before_its_first_delta_only(pool):
    pool.fakes["t1:1"].mode = "down"
    pool.fakes["t2:1"].mode = "down"
    pool.fakes["t1:1"].ready = pool.fakes["t2:1"].ready = False
    with pytest.raises(ApiError) as e:
        await texts(pool, buffered=False)
    assert e.value.code == "model_unavailable" and e.value.status == grpc.StatusCode.UNAVAILABLE
    assert int(dict(e.value.headers)["retry-after"]) >= 1
    assert "model:1" in e.value.message


async def test_a_stream_cut_after_its_first_delta_ends_with_an_error(pool):
    for fake in pool.fakes.values():
        fake.mode = "fail_after_first"
    received = []
    with pytest.raises(ApiError) as e:
        async for delta in pool.generate(ENDPOINTS, "m", "p", {}, "rid", buffered=False):
            received.append(delta.text)
    assert len(received) == 1 and e.value.code == "backend_unavailable"
    assert sum(f.calls for f in pool.fakes.values()) == 1  # not replayed elsewhere: the client has part of it


async def test_a_bad_request_is_not_retried_and_ejects_nothing(pool):
    for fake in pool.fakes.values():
        fake.mode = "bad_request"
    with pytest.raises(ApiError) as e:
        await texts(pool, buffered=True)
    assert e.value.code == "invalid_value"
    assert sum(f.calls for f in pool.fakes.values()) == 1
    assert all(pool.in_rotation(a, "m") for a in ENDPOINTS)


async def test_no_replica_in_rotation_is_a_fast_503_then_a_probe_brings_it_back(pool):
    fake = pool.fakes["t1:1"]
    fake.mode, fake.ready = "model_down", False
    with pytest.raises(ApiError) as e:
        await texts(pool, buffered=True, endpoints=("t1:1",))
    assert e.value.code == "model_unavailable"
    with pytest.raises(ApiError):  # while out of rotation: refused without touching the replica
        await texts(pool, buffered=True, endpoints=("t1:1",))
    assert fake.calls == 1
    await asyncio.sleep(0.1)  # cool-down over, the probe says no: still out
    assert not pool.in_rotation("t1:1", "m")
    fake.mode, fake.ready = "ok", True
    for _ in range(100):
        if pool.in_rotation("t1:1", "m"):
            break
        await asyncio.sleep(0.02)
    assert await texts(pool, buffered=True, endpoints=("t1:1",)) == ["t1:1:a", "b"]
    # A model-level failure ejects only that model on the replica, not the replica.
    assert pool.in_rotation("t1:1", "other-model")


async def test_at_most_two_replicas_try_one_request(pool):
    pool.replica("t3:1")
    for fake in pool.fakes.values():
        fake.mode, fake.ready = "model_down", False
    with pytest.raises(ApiError) as e:
        await texts(pool, buffered=True, endpoints=("t1:1", "t2:1", "t3:1"))
    assert e.value.code == "model_unavailable"
    assert sum(f.calls for f in pool.fakes.values()) == 2


async def test_a_dead_model_instance_is_reported_a_dead_server_is_not(pool):
    pool.fakes["t1:1"].mode, pool.fakes["t1:1"].ready = "model_down", False
    pool.fakes["t2:1"].mode, pool.fakes["t2:1"].ready = "down", False
    with pytest.raises(ApiError):
        await texts(pool, buffered=True)
    await asyncio.sleep(0)
    assert pool.reported == [("t1:1", "m")]  # the catalog reloads a model; a server is the supervisor's business


async def test_a_replica_nobody_names_any_more_is_no_longer_probed(pool, monkeypatch):
    monkeypatch.setattr(replicas_module, "FORGET_AFTER", 0.05)
    fake = pool.fakes["t1:1"]
    fake.mode, fake.ready = "down", False
    with pytest.raises(ApiError):
        await texts(pool, buffered=True, endpoints=("t1:1",))
    assert not pool.in_rotation("t1:1", "m")
    for _ in range(100):  # no request names t1 any more: its probe gives up and forgets it
        if not pool._probes:
            break
        await asyncio.sleep(0.02)
    assert not pool._probes and pool.in_rotation("t1:1", "m")
