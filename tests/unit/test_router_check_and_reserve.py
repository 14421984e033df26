"""The guard's verdict and metering's grant are asked at once; whatever refuses the request, a reservation that was
granted is released exactly once (and a replayed id's, which belongs to the first request, never)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import grpc
import pytest
from llmaas.common.errors import ApiError
from llmaas.common.identity import Identity
from llmaas.guard.v1 import guard_pb2
from llmaas.metering.v1 import metering_pb2
from llmaas.router.pipeline import Caller, ChatPipeline, ChatRun
from llmaas.router.replicas import ReplicaPool


class FakeDownstream:
    """A fake of the router's guard and metering calls (unit tests only), each taking `delay` seconds."""

    def __init__(self, *, decision=guard_pb2.DECISION_ALLOW, reserve_error: ApiError | None = None,
                 replay: bool = False, guard_error: ApiError | None = None, delay: float = 0.05) -> None:
        self.decision, self.reserve_error, self.replay, self.guard_error = decision, reserve_error, replay, guard_error
        self.delay = delay
        self.settled: list = []
        self.guard_started = self.reserve_started = None
        self.guard_cancelled = False

    async def check_prompt(self, request, identity=""):
        self.guard_started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.guard_cancelled = True
            raise
        if self.guard_error:
            raise self.guard_error
        return guard_pb2.CheckPromptResponse(decision=self.decision)

    async def reserve(self, request, identity=""):
        self.reserve_started = asyncio.get_running_loop().time()
        await asyncio.sleep(self.delay)
        if self.reserve_error:
            raise self.reserve_error
        return metering_pb2.ReserveResponse(replay=self.replay)

    async def settle_batch(self, batch) -> None:
        self.settled.extend(batch)

    async def record_requests(self, batch) -> None:
        pass


def _run() -> ChatRun:
    caller = Caller(Identity("t", "k"), "req-1", "POST /v1/chat/completions", "127.0.0.1")
    return ChatRun(id="chatcmpl-1", request_id="req-1", created=0, model="m:1", params=SimpleNamespace(stream=False),
                   caller=caller, triton_model="m", endpoints=(), prompt="p", sampling={})


async def _ask(downstream: FakeDownstream):
    pipeline = ChatPipeline(downstream, ReplicaPool(lambda address: None), "secret")
    try:
        return await pipeline._check_and_reserve(_run(), guard_pb2.CheckPromptRequest(),
                                                 metering_pb2.ReserveRequest(request_id="req-1"))
    finally:
        await pipeline.drain()


async def test_both_are_asked_at_once_and_an_allowed_prompt_keeps_its_reservation():
    downstream = FakeDownstream()
    started = asyncio.get_running_loop().time()
    verdict, reserved = await _ask(downstream)
    assert verdict.decision == guard_pb2.DECISION_ALLOW and not reserved.replay
    assert abs(downstream.guard_started - downstream.reserve_started) < 0.02
    assert asyncio.get_running_loop().time() - started < 2 * downstream.delay  # one round trip, not two
    assert downstream.settled == []


async def test_a_blocked_prompt_releases_its_reservation_as_rejected():
    downstream = FakeDownstream(decision=guard_pb2.DECISION_BLOCK)
    with pytest.raises(ApiError) as e:
        await _ask(downstream)
    assert e.value.code == "prompt_rejected"
    assert [(s.request_id, s.outcome, s.prompt_tokens, s.completion_tokens) for s in downstream.settled] == \
        [("req-1", "rejected", 0, 0)]


async def test_a_failing_guard_releases_the_reservation():
    downstream = FakeDownstream(guard_error=ApiError(grpc.StatusCode.UNAVAILABLE, "guard down"))
    with pytest.raises(ApiError):
        await _ask(downstream)
    assert [s.outcome for s in downstream.settled] == ["rejected"]


async def test_a_refused_grant_cancels_the_guard_and_settles_nothing():
    downstream = FakeDownstream(reserve_error=ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "limit"), delay=0.05)

    async def slow_guard(request, identity=""):  # still running when metering refuses
        downstream.guard_started = asyncio.get_running_loop().time()
        try:
            await asyncio.sleep(1.0)
        except asyncio.CancelledError:
            downstream.guard_cancelled = True
            raise
    downstream.check_prompt = slow_guard
    with pytest.raises(ApiError) as e:
        await _ask(downstream)
    assert e.value.status == grpc.StatusCode.RESOURCE_EXHAUSTED
    await asyncio.sleep(0)
    assert downstream.guard_cancelled and downstream.settled == []


async def test_a_replayed_id_is_refused_without_releasing_the_first_requests_reservation():
    downstream = FakeDownstream(replay=True)
    with pytest.raises(ApiError) as e:
        await _ask(downstream)
    assert e.value.code == "request_replayed"
    assert downstream.settled == []
