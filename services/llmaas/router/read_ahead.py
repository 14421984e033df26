"""Reading a stream of deltas ahead of the client, so that the SSE relay writes what arrived meanwhile in one message.

Each message the router writes to Envoy costs about as much CPU as reading one from Triton (a gRPC write, Envoy's
transcoding, an HTTP chunk). When the model produces faster than the relay writes (a loaded router, a fast model),
the deltas that queued up during one write go out together in the next: same bytes, same SSE events, fewer messages.
Nothing ever waits to coalesce: a delta that arrives alone is written alone, at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Generic, TypeVar

T = TypeVar("T")

_END = object()


class ReadAhead(Generic[T]):
    """Iterates `source` in a task of its own. `batch()` returns at least one item (waiting for it) plus every item
    already there; the source's error is raised once the items before it were returned, StopAsyncIteration at its
    end. `close()` stops the reading (the source sees a cancellation) and waits for it, before anyone closes the
    source itself."""

    def __init__(self, source: AsyncIterator[T]) -> None:
        self._queue: asyncio.Queue = asyncio.Queue()
        self._error: BaseException | None = None
        self._task = asyncio.ensure_future(self._pump(source))

    async def _pump(self, source: AsyncIterator[T]) -> None:
        try:
            async for item in source:
                self._queue.put_nowait(item)
        except asyncio.CancelledError:
            raise
        except Exception as e:  # handed to the consumer, in order
            self._queue.put_nowait(_Failure(e))
            return
        self._queue.put_nowait(_END)

    async def batch(self) -> list[T]:
        if self._error is not None:
            raise self._error
        items: list[T] = []
        entry = await self._queue.get()
        while True:
            if entry is _END or isinstance(entry, _Failure):
                self._error = StopAsyncIteration() if entry is _END else entry.error
                if not items:
                    raise self._error
                return items
            items.append(entry)
            if self._queue.empty():
                return items
            entry = self._queue.get_nowait()

    async def close(self) -> None:
        if not self._task.done():
            self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


class _Failure:
    def __init__(self, error: Exception) -> None:
        self.error = error
