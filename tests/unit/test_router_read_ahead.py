"""The SSE relay's read-ahead: items that arrived while the consumer was busy come in one batch, in order; nothing
waits to coalesce; the source's error comes after the items before it; closing stops the source."""

from __future__ import annotations

import asyncio

import pytest
from llmaas.router.read_ahead import ReadAhead


async def _source(items, *, error: Exception | None = None, gap: float = 0.0, log: list | None = None):
    try:
        for item in items:
            if gap:
                await asyncio.sleep(gap)
            yield item
        if error is not None:
            raise error
    finally:
        if log is not None:
            log.append("closed")


async def test_a_busy_consumer_gets_what_arrived_meanwhile_in_one_batch_in_order():
    ahead = ReadAhead(_source(range(5)))
    await asyncio.sleep(0.01)  # the consumer was writing: all five arrived
    assert await ahead.batch() == [0, 1, 2, 3, 4]
    with pytest.raises(StopAsyncIteration):
        await ahead.batch()
    await ahead.close()


async def test_an_item_that_arrives_alone_is_returned_at_once():
    ahead = ReadAhead(_source(["a", "b"], gap=0.05))
    loop = asyncio.get_running_loop()
    started = loop.time()
    assert await ahead.batch() == ["a"]
    assert loop.time() - started < 0.09  # not held back waiting for "b"
    assert await ahead.batch() == ["b"]
    await ahead.close()


async def test_the_sources_error_comes_after_the_items_before_it():
    ahead = ReadAhead(_source([1, 2], error=ValueError("backend failed")))
    await asyncio.sleep(0.01)
    assert await ahead.batch() == [1, 2]
    with pytest.raises(ValueError, match="backend failed"):
        await ahead.batch()
    with pytest.raises(ValueError):  # and again: the stream is over
        await ahead.batch()
    await ahead.close()


async def test_closing_stops_the_source_while_it_waits():
    log: list = []
    ahead = ReadAhead(_source(range(100), gap=0.05, log=log))
    assert await ahead.batch() == [0]
    await ahead.close()
    assert log == ["closed"]
