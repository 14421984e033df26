"""Hand-offs that must land, sent in batches: settlements to metering, audit records to auth.

A request's settlement and audit record are idempotent by request id, and nothing waits for them (the client already
has its answer). Sent one RPC each, they cost more CPU than the rest of the request; gathered for a few milliseconds
they cost one RPC and one transaction per batch. The bound is explicit: an item is sent within `max_delay` seconds of
being submitted (sooner when `max_items` are waiting), and kept and retried while its service is unavailable
(restarting, killed, or too slow to answer within the call's deadline) for `patience` seconds; any other error is
final, and logged with the request ids.

A batch belongs to no single request, so its call runs in a context of its own: in the submitting request's context,
every batch would be traced as a child of whichever request happened to start the flusher.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

import grpc

from llmaas.common.errors import ApiError

log = logging.getLogger("llmaas.router")

T = TypeVar("T")

# How long an item keeps being retried while its service is unavailable (beyond gRPC's own retries).
PATIENCE = 120.0
# Worth retrying: the service is down or restarting, or did not answer in time. Sending again is safe (idempotent per
# item); anything else would fail again.
_RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED})


class BatchedHandOff(Generic[T]):
    """send(batch) delivers a list of items in one call (idempotent per item, so a retried batch never counts twice);
    request_id(item) names an item in the log of a final failure."""

    def __init__(self, what: str, send: Callable[[list[T]], Awaitable[None]], request_id: Callable[[T], str], *,
                 max_items: int = 256, max_delay: float = 0.01, patience: float = PATIENCE,
                 retry_delay: float = 0.5) -> None:
        self._what, self._send, self._request_id = what, send, request_id
        self._max_items, self._max_delay, self._patience = max_items, max_delay, patience
        self._retry_delay = retry_delay  # the first pause before a retry; it doubles up to 5 s
        self._pending: list[T] = []
        self._wakeup: asyncio.Event | None = None
        self._flusher: asyncio.Task | None = None
        self._in_flight: set[asyncio.Task] = set()

    def submit(self, item: T) -> None:
        """Queues one item (never blocks, never raises): sent within max_delay."""
        self._pending.append(item)
        if self._flusher is None or self._flusher.done():
            self._wakeup = asyncio.Event()
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop(), context=contextvars.Context())
        # The first item starts the batch's clock; a full batch goes at once.
        if len(self._pending) == 1 or len(self._pending) >= self._max_items:
            self._wakeup.set()

    @property
    def pending(self) -> int:
        """Items not yet delivered (queued or in a batch being sent)."""
        return len(self._pending) + sum(getattr(t, "items", 0) for t in self._in_flight)

    async def _flush_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await self._wakeup.wait()
            # Let the batch fill for max_delay from its first item (or until max_items are waiting), then send it
            # while the next one fills.
            deadline = loop.time() + self._max_delay
            while self._pending and len(self._pending) < self._max_items and (left := deadline - loop.time()) > 0:
                self._wakeup.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wakeup.wait(), left)
            self._wakeup.clear()
            self._dispatch()

    def _dispatch(self) -> None:
        """Sends everything queued now, in batches of at most max_items."""
        loop = asyncio.get_running_loop()
        while self._pending:
            batch, self._pending = self._pending[:self._max_items], self._pending[self._max_items:]
            task = loop.create_task(self._deliver(batch), context=contextvars.Context())
            task.items = len(batch)
            self._in_flight.add(task)
            task.add_done_callback(self._in_flight.discard)

    async def _deliver(self, batch: list[T]) -> None:
        deadline, delay = time.monotonic() + self._patience, self._retry_delay
        while True:
            try:
                await self._send(batch)
                return
            except ApiError as e:
                if e.status not in _RETRYABLE or time.monotonic() > deadline:
                    self._give_up(batch, e.message)
                    return
            except Exception as e:  # noqa: BLE001 - an unexpected error is logged like a final one, never lost silently
                self._give_up(batch, type(e).__name__)
                return
            await asyncio.sleep(delay)
            delay = min(2 * delay, 5.0)

    def _give_up(self, batch: list[T], error: str) -> None:
        log.error(f"{self._what} failed", extra={"fields": {
            "request_ids": [self._request_id(i) for i in batch[:20]], "items": len(batch), "error": error}})

    async def drain(self) -> None:
        """Sends what is queued now, without waiting for the batch to fill, and waits until every batch is delivered
        or given up (called on shutdown)."""
        while self._pending or self._in_flight:
            self._dispatch()
            await asyncio.gather(*self._in_flight, return_exceptions=True)
