"""The catalog's revision: moved by a new catalogue and by a change of the served set, pushed to every stream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.served import ServedModels
from llmaas.catalog.watch import Revisions
from llmaas.common.errors import ApiError

from tests.unit.test_catalog_reload import GOOD, write
from tests.unit.test_catalog_successor import FakeTriton


async def test_streams_get_the_revision_now_changes_coalesced_heartbeats_and_an_end():
    revisions = Revisions(heartbeat=0.05)
    stream = revisions.stream()
    assert await anext(stream) == 1
    revisions.bump("a")
    revisions.bump("b")  # before the stream reads: only the latest matters
    assert await anext(stream) == 3
    assert await asyncio.wait_for(anext(stream), 1) == 3  # nothing changed: the heartbeat repeats it
    other = revisions.stream()
    assert await anext(other) == 3
    revisions.close()
    for s in (stream, other):
        with pytest.raises(StopAsyncIteration):
            await asyncio.wait_for(anext(s), 1)


async def test_a_waiting_stream_wakes_at_once_on_a_change():
    revisions = Revisions(heartbeat=60)
    stream = revisions.stream()
    await anext(stream)
    waiting = asyncio.create_task(anext(stream))
    await asyncio.sleep(0.01)
    revisions.bump("reload")
    assert await asyncio.wait_for(waiting, 1) == 2


def test_only_a_catalogue_that_comes_into_force_moves_the_revision(tmp_path: Path):
    changes = []
    f = tmp_path / "c.yaml"
    write(f, GOOD.format(id="a"), 1)
    source = CatalogSource([f], on_change=lambda: changes.append(source.current))
    source.refresh()
    write(f, GOOD.format(id="b").replace("type: chat", "type: bogus"), 2)
    source.refresh()
    assert changes == []  # refused: the previous catalogue stays, and so does the revision
    write(f, GOOD.format(id="b"), 3)
    source.refresh()
    assert len(changes) == 1 and changes[0].lookup("b")
    os.utime(f, ns=(4 * 10**9, 4 * 10**9))  # touched, same content: reloaded, announced (cheap, and rare)
    source.refresh()
    assert len(changes) == 2


async def test_a_change_of_the_served_set_moves_the_revision(monkeypatch):
    from llmaas.catalog import served as served_module
    monkeypatch.setattr(served_module, "CACHE_SECONDS", 0.0)
    triton, changes = FakeTriton("a-t"), []
    served = ServedModels("unused", client=triton, on_change=lambda: changes.append(1))
    assert await served.ready() == {"a-t"} and changes == []  # the first answer is not a change
    assert await served.ready() == {"a-t"} and changes == []
    triton.ready.add("b-t")
    assert await served.ready() == {"a-t", "b-t"} and changes == [1]
    triton.fail = True
    with pytest.raises(ApiError):
        await served.ready()
    triton.fail = False
    assert await served.ready() == {"a-t", "b-t"} and changes == [1]  # an outage alone is not a change
    triton.ready.discard("a-t")
    watcher = asyncio.create_task(served.watch(interval=0.01))  # noticed without any request
    try:
        for _ in range(100):
            if len(changes) == 2:
                break
            await asyncio.sleep(0.01)
        assert changes == [1, 1]
    finally:
        watcher.cancel()


async def test_the_served_set_is_known_only_once_triton_has_answered(monkeypatch):
    """The catalog is not healthy before (every request would be UNAVAILABLE): watch() asks again every
    FIRST_POLL_SECONDS until Triton answers, then known() returns."""
    from llmaas.catalog import served as served_module
    monkeypatch.setattr(served_module, "FIRST_POLL_SECONDS", 0.01)
    triton = FakeTriton("a-t")
    triton.fail = True
    served = ServedModels("unused", client=triton)
    watcher = asyncio.create_task(served.watch(interval=60))
    try:
        known = asyncio.create_task(served.known())
        await asyncio.sleep(0.05)
        assert not known.done()
        triton.fail = False
        await asyncio.wait_for(known, 1.0)  # well before the 60 s interval
        assert await served.ready() == {"a-t"}
    finally:
        watcher.cancel()
