"""BatchedHandOff: items gathered into batches within max_delay (at once when max_items wait), retried while their
service is unavailable or slow, given up (logged with their request ids) on any other error, and drained on
shutdown without waiting for a batch to fill."""

from __future__ import annotations

import asyncio
import contextvars
import logging

import grpc
import pytest
from llmaas.common.errors import ApiError
from llmaas.router.handoff import BatchedHandOff


class Receiver:
    """A fake downstream call (unit tests only): records each batch and when it came; `failures` are raised first,
    one per call."""

    def __init__(self, *failures: BaseException) -> None:
        self.batches: list[list[str]] = []
        self.at: list[float] = []
        self.calls = 0
        self._failures = list(failures)

    async def send(self, batch: list[str]) -> None:
        self.calls += 1
        if self._failures:
            raise self._failures.pop(0)
        self.batches.append(list(batch))
        self.at.append(asyncio.get_running_loop().time())


def _handoff(receiver: Receiver, **options) -> BatchedHandOff[str]:
    return BatchedHandOff("test item", receiver.send, lambda item: item, **options)


async def _until(condition, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.001)


async def test_items_submitted_together_share_one_batch_sent_within_max_delay():
    receiver = Receiver()
    handoff = _handoff(receiver, max_delay=0.02)
    started = asyncio.get_running_loop().time()
    for i in range(20):
        handoff.submit(f"req-{i}")
        await asyncio.sleep(0)  # the others' requests end meanwhile
    assert handoff.pending == 20
    await _until(lambda: receiver.batches)
    assert receiver.batches == [[f"req-{i}" for i in range(20)]]
    assert receiver.at[0] - started < 0.02 + 0.03  # the bound, plus the loop's slack on a loaded machine
    await _until(lambda: handoff.pending == 0)
    # A later item starts a batch of its own, under the same bound.
    submitted = asyncio.get_running_loop().time()
    handoff.submit("late")
    await _until(lambda: len(receiver.batches) == 2)
    assert receiver.batches[1] == ["late"] and receiver.at[1] - submitted < 0.02 + 0.03


async def test_a_full_batch_goes_at_once_and_no_batch_exceeds_max_items():
    receiver = Receiver()
    handoff = _handoff(receiver, max_items=5, max_delay=30.0)
    for i in range(12):
        handoff.submit(f"req-{i}")
    await _until(lambda: len(receiver.batches) == 3)  # without waiting for the 30 s delay
    assert [len(b) for b in receiver.batches] == [5, 5, 2]
    assert [i for b in receiver.batches for i in b] == [f"req-{i}" for i in range(12)]
    await _until(lambda: handoff.pending == 0)


async def test_drain_does_not_wait_for_a_batch_to_fill():
    receiver = Receiver()
    handoff = _handoff(receiver, max_delay=30.0)
    handoff.submit("req-1")
    await asyncio.sleep(0.01)  # the flusher is waiting for more
    handoff.submit("req-2")
    await asyncio.wait_for(handoff.drain(), 2.0)
    assert receiver.batches == [["req-1", "req-2"]] and handoff.pending == 0


async def test_unavailable_and_late_answers_are_retried_until_delivered_once():
    receiver = Receiver(ApiError(grpc.StatusCode.UNAVAILABLE, "restarting"),
                        ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, "too slow"))
    handoff = _handoff(receiver, max_delay=0.001, retry_delay=0.01)
    handoff.submit("req-1")
    handoff.submit("req-2")
    await _until(lambda: receiver.batches)
    assert receiver.calls == 3 and receiver.batches == [["req-1", "req-2"]]
    await _until(lambda: handoff.pending == 0)


async def test_retries_stop_after_patience_and_are_logged(caplog):
    receiver = Receiver(*[ApiError(grpc.StatusCode.UNAVAILABLE, "down")] * 100)
    handoff = _handoff(receiver, max_delay=0.001, patience=0.05, retry_delay=0.01)
    handoff.submit("req-1")
    with caplog.at_level(logging.ERROR, logger="llmaas.router"):
        await handoff.drain()
    assert 2 <= receiver.calls < 10 and not receiver.batches
    [failure] = [r for r in caplog.records if r.message == "test item failed"]
    assert failure.fields["request_ids"] == ["req-1"] and failure.fields["error"] == "down"


@pytest.mark.parametrize("error", [ApiError(grpc.StatusCode.INVALID_ARGUMENT, "malformed"), RuntimeError("bug")])
async def test_other_errors_are_final_logged_with_request_ids_and_later_items_still_go(caplog, error):
    receiver = Receiver(error)
    handoff = _handoff(receiver, max_delay=0.001, retry_delay=0.01)
    with caplog.at_level(logging.ERROR, logger="llmaas.router"):
        handoff.submit("req-1")
        handoff.submit("req-2")
        await handoff.drain()
    assert receiver.calls == 1 and not receiver.batches  # not retried
    [failure] = [r for r in caplog.records if r.message == "test item failed"]
    assert failure.fields["request_ids"] == ["req-1", "req-2"] and failure.fields["items"] == 2
    handoff.submit("req-3")
    await _until(lambda: receiver.batches)
    assert receiver.batches == [["req-3"]]


async def test_a_batch_is_sent_outside_the_submitting_requests_context():
    """Each request runs in its own context (its trace span among others): a batch serves many requests, so it must
    not be sent, and traced, as part of whichever request submitted first."""
    current = contextvars.ContextVar("current", default="none")
    seen: list[str] = []

    async def send(batch: list[str]) -> None:
        seen.append(current.get())

    handoff: BatchedHandOff[str] = BatchedHandOff("test item", send, lambda item: item, max_delay=0.001)

    async def request(name: str) -> None:
        current.set(name)
        handoff.submit(name)

    await asyncio.gather(asyncio.create_task(request("first")), asyncio.create_task(request("second")))
    await _until(lambda: seen)
    await handoff.drain()
    assert seen == ["none"]


async def test_drain_sends_what_is_queued_and_waits_for_batches_in_flight():
    release = asyncio.Event()
    delivered: list[list[str]] = []

    async def slow_send(batch: list[str]) -> None:
        await release.wait()
        delivered.append(batch)

    handoff: BatchedHandOff[str] = BatchedHandOff("test item", slow_send, lambda item: item, max_delay=0.001)
    handoff.submit("req-1")
    await _until(lambda: handoff.pending == 1 and not handoff._pending)  # in flight, blocked
    handoff.submit("req-2")  # queued
    drain = asyncio.create_task(handoff.drain())
    await asyncio.sleep(0.01)
    assert not drain.done()
    release.set()
    await asyncio.wait_for(drain, 2.0)
    assert sorted(i for b in delivered for i in b) == ["req-1", "req-2"] and handoff.pending == 0
