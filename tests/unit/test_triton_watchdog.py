"""The stream watchdog (llmaas.router.triton): a silent stream whose model instance is gone is cancelled and fails
over as a ReplicaFailure; grpc.aio reports a locally cancelled call as a cancellation, which must not pass for the
client's. The fake call and replica here are unit-test fakes."""

from __future__ import annotations

import asyncio

import pytest
from llmaas.router import triton
from llmaas.router.triton import ReplicaFailure


class FakeCall:
    """Unit-test fake of a grpc.aio stream call: silent until cancelled, then a cancellation, as grpc.aio raises."""

    def __init__(self) -> None:
        self._cancelled = asyncio.Event()

    async def read(self):
        await self._cancelled.wait()
        raise asyncio.CancelledError()

    def cancel(self) -> bool:
        self._cancelled.set()
        return True


def replica(monkeypatch, canary: bool | None) -> triton.TritonReplica:
    r = triton.TritonReplica.__new__(triton.TritonReplica)
    r.address, r._canaries = "127.0.0.1:1", {}
    r._inputs, r._outputs = {"m": frozenset({"text_input", "sampling_parameters"})}, {"m": frozenset({"text_output"})}
    r._stream_infer = lambda request, metadata=(): FakeCall()

    async def fake_canary(model):
        return canary

    monkeypatch.setattr(r, "canary", fake_canary)
    monkeypatch.setattr(triton, "WATCHDOG_SECONDS", 0.05)
    return r


async def test_a_stream_whose_instance_is_gone_fails_over_instead_of_passing_for_a_cancellation(monkeypatch):
    r = replica(monkeypatch, canary=False)
    with pytest.raises(ReplicaFailure) as e:
        async for _ in r.generate("m", "hi", {"max_tokens": 4}, "req-1"):
            pass
    assert e.value.model_level


async def test_a_consumer_cancelled_meanwhile_is_still_a_cancellation(monkeypatch):
    r = replica(monkeypatch, canary=None)  # inconclusive: the watchdog keeps waiting

    async def consume():
        async for _ in r.generate("m", "hi", {"max_tokens": 4}, "req-1"):
            pass

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.12)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
