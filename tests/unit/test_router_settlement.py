"""Once a reservation is granted it is settled exactly once, whatever happens next: a caller gone before the model's
first output, one gone in the middle of a buffered (non-streamed) answer, a retry on another replica."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

import pytest
from llmaas.common.identity import Identity
from llmaas.router import breaker as breaker_module
from llmaas.router.pipeline import HANDOFF_DELAY, Caller, ChatPipeline, ChatRun
from llmaas.router.replicas import ReplicaPool
from llmaas.router.triton import Delta, ReplicaFailure


class FakeDownstream:
    """A fake of the router's downstream calls (unit tests only): records settlements and audit records."""

    def __init__(self) -> None:
        self.settled: list = []
        self.batches: list[int] = []  # sizes of the SettleBatch calls
        self.recorded: list = []

    async def settle_batch(self, batch) -> None:
        self.batches.append(len(batch))
        self.settled.extend(batch)

    async def record_requests(self, batch) -> None:
        self.recorded.extend(request for request, _signed_identity, _client_address in batch)


class SlowReplica:
    """A fake replica (unit tests only): one token every 10 ms, `tokens` of them (the texts `pieces`, else "x");
    `fail_after` cuts it."""

    def __init__(self, address: str, tokens: int = 50, fail_after: int | None = None,
                 pieces: list[str] | None = None) -> None:
        self.address, self.tokens, self.fail_after = address, len(pieces) if pieces else tokens, fail_after
        self.pieces = pieces or ["x"] * tokens

    async def generate(self, model, prompt, sampling, request_id, whole=False):
        for i in range(self.tokens):
            if self.fail_after is not None and i == self.fail_after:
                raise ReplicaFailure("UNAVAILABLE: reset", model_level=False)
            await asyncio.sleep(0.01)
            last = i == self.tokens - 1
            yield Delta(self.pieces[i], "length" if last else None, 7, 1, last)

    async def server_ready(self) -> bool:
        return False

    async def canary(self, model) -> bool:
        return False

    async def close(self) -> None:
        pass


def make(replicas: dict[str, SlowReplica], *, stream: bool) -> tuple[ChatPipeline, ChatRun, FakeDownstream]:
    downstream = FakeDownstream()
    pipeline = ChatPipeline(downstream, ReplicaPool(replicas.__getitem__), "secret")
    caller = Caller(Identity("t", "k"), "req-1", "POST /v1/chat/completions", "127.0.0.1")
    run = ChatRun(id="chatcmpl-1", request_id="req-1", created=0, model="m:1", params=SimpleNamespace(stream=stream),
                  caller=caller, triton_model="m", endpoints=tuple(replicas), prompt="p", sampling={})
    return pipeline, run, downstream


@pytest.fixture(autouse=True)
def short_cool_down(monkeypatch):
    monkeypatch.setattr(breaker_module, "FIRST_COOL_DOWN", 60.0)


async def test_a_caller_gone_before_the_first_output_is_settled_once_as_cancelled():
    pipeline, run, downstream = make({"r1:1": SlowReplica("r1:1")}, stream=True)
    pipeline.finish(run)  # the servicer's finally, the model never started
    pipeline.finish(run)
    await pipeline.drain()
    assert [(s.outcome, s.completion_tokens) for s in downstream.settled] == [("cancelled", 0)]
    assert [r.status for r in downstream.recorded] == [499]


async def test_a_buffered_answer_abandoned_midway_is_billed_for_what_was_produced():
    pipeline, run, downstream = make({"r1:1": SlowReplica("r1:1")}, stream=False)

    async def consume():
        return [d async for d in pipeline.run(run)]

    task = asyncio.create_task(consume())
    await asyncio.sleep(0.12)  # ~11 tokens produced, none delivered (buffered)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pipeline.finish(run)
    await pipeline.drain()
    [settled] = downstream.settled
    assert settled.outcome == "cancelled" and 5 <= settled.completion_tokens < 50 and settled.prompt_tokens == 7


async def test_a_retried_answer_counts_only_the_attempt_that_served():
    replicas = {"r1:1": SlowReplica("r1:1", tokens=5, fail_after=3), "r2:1": SlowReplica("r2:1", tokens=5)}
    pipeline, run, downstream = make(replicas, stream=False)
    pipeline._replicas.replica("r2:1")
    pipeline._replicas._outstanding["r2:1"] = 1  # r1 is the least loaded: tried first, it fails after 3 tokens
    deltas = [d async for d in pipeline.run(run)]
    pipeline.finish(run)
    await pipeline.drain()
    assert len(deltas) == 5 and run.usage.completion_tokens == 5
    assert [(s.outcome, s.completion_tokens) for s in downstream.settled] == [("completed", 5)]


async def test_reasoning_tokens_are_settled_and_a_retried_attempts_are_not():
    from llmaas.catalog.v1.catalog_pb2 import ReasoningFormat

    pieces = ["<", "think", ">", " a", " b", "</", "think", ">", " c"]
    replicas = {"r1:1": SlowReplica("r1:1", pieces=pieces, fail_after=4), "r2:1": SlowReplica("r2:1", pieces=pieces)}
    pipeline, run, downstream = make(replicas, stream=False)
    run.reasoning = ReasoningFormat(start="<think>", end="</think>")
    pipeline._replicas.replica("r2:1")
    pipeline._replicas._outstanding["r2:1"] = 1  # r1 first: it fails inside the reasoning
    deltas = [d async for d in pipeline.run(run)]
    pipeline.finish(run)
    await pipeline.drain()
    assert len(deltas) == 9 and (run.usage.completion_tokens, run.usage.reasoning_tokens) == (9, 8)
    assert [(s.completion_tokens, s.reasoning_tokens) for s in downstream.settled] == [(9, 8)]


async def test_settlements_of_requests_ending_together_share_one_call_within_the_delay():
    pipeline, _, downstream = make({"r1:1": SlowReplica("r1:1")}, stream=False)
    caller = Caller(Identity("t", "k"), "req", "POST /v1/chat/completions", "127.0.0.1")
    runs = [ChatRun(id=f"chatcmpl-{i}", request_id=f"req-{i}", created=0, model="m:1",
                    params=SimpleNamespace(stream=False), caller=caller, triton_model="m", endpoints=("r1:1",),
                    prompt="p", sampling={}, outcome="completed") for i in range(20)]
    started = asyncio.get_running_loop().time()
    for run in runs:
        pipeline.finish(run)
    while len(downstream.settled) < len(runs):
        await asyncio.sleep(0.001)
    elapsed = asyncio.get_running_loop().time() - started
    assert downstream.batches == [20] and elapsed < HANDOFF_DELAY + 0.05
    assert sorted(s.request_id for s in downstream.settled) == sorted(r.request_id for r in runs)
    await pipeline.drain()
