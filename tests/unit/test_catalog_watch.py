"""The catalog's revision: moved by a new catalogue and by a change of the served set, pushed to every stream."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.watch import Revisions

from tests.unit.test_catalog_reload import GOOD, write
from tests.unit.test_catalog_successor import CATALOG, FakeTriton, served_by


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


def _models(snapshot) -> set[str]:
    return set(snapshot.served_models())


async def test_a_change_of_the_served_set_moves_the_revision(monkeypatch):
    from llmaas.catalog import served as served_module
    monkeypatch.setattr(served_module, "POLL_SECONDS", 0.0)
    triton, changes = FakeTriton("a-t"), []
    served = served_by(triton, on_change=lambda: changes.append(1))
    assert _models(await served.snapshot()) == {"a-t"} and changes == []  # the first answer is not a change
    assert _models(await served.snapshot()) == {"a-t"} and changes == []
    triton.ready.add("b-t")
    assert _models(await served.snapshot()) == {"a-t", "b-t"} and changes == [1]
    triton.fail = True
    assert _models(await served.snapshot()) == set() and changes == [1, 1]  # a replica down serves nothing
    triton.fail = False
    assert _models(await served.snapshot()) == {"a-t", "b-t"} and changes == [1, 1, 1]
    triton.ready.discard("a-t")
    watcher = asyncio.create_task(served.watch(interval=0.01))  # noticed without any request
    try:
        for _ in range(100):
            if len(changes) == 4:
                break
            await asyncio.sleep(0.01)
        assert changes == [1, 1, 1, 1]
    finally:
        watcher.cancel()


async def test_a_model_whose_instance_died_is_out_of_the_served_set_and_reloaded(monkeypatch):
    """Triton's index keeps saying READY when a Python backend's stub dies; ModelReady does not. The catalog stops
    serving it there at once, unloads and loads it again (only if the catalogue references it), and serves it
    again once it is ready."""
    from llmaas.catalog import served as served_module
    monkeypatch.setattr(served_module, "POLL_SECONDS", 0.0)
    healthy, crashing = FakeTriton("a-t", "x-t"), FakeTriton("a-t", "x-t")
    served = served_by(healthy, crashing, wanted=lambda: frozenset({"a-t"}))
    snapshot = await served.snapshot()
    assert snapshot.ready == {"r0:1": {"a-t", "x-t"}, "r1:1": {"a-t", "x-t"}}
    crashing.ready -= {"a-t", "x-t"}
    crashing.broken |= {"a-t", "x-t"}
    snapshot = await served.snapshot()
    assert snapshot.ready["r1:1"] == set() and snapshot.ready["r0:1"] == {"a-t", "x-t"}
    await asyncio.sleep(0.01)  # the reload runs in the background
    assert crashing.calls == [("unload", "a-t"), ("load", "a-t")]  # x-t is not in the catalogue: left alone
    assert (await served.snapshot()).ready["r1:1"] == {"a-t"}


async def test_a_deployed_model_with_no_replica_ready_is_down_not_unknown(monkeypatch, tmp_path):
    from llmaas.catalog import served as served_module
    from llmaas.catalog.entries import load_catalog
    monkeypatch.setattr(served_module, "POLL_SECONDS", 0.0)
    triton = FakeTriton("new-t")
    served = served_by(triton, wanted=frozenset)
    (tmp_path / "c.yaml").write_text(CATALOG)
    catalog = load_catalog([tmp_path / "c.yaml"])
    entry = catalog.lookup("new")
    snapshot = await served.snapshot()
    assert snapshot.replicas(entry) == ("r0:1",) and not snapshot.down(entry)
    triton.ready.clear()
    triton.broken.add("new-t")
    snapshot = await served.snapshot()
    assert snapshot.replicas(entry) == () and snapshot.down(entry)
    triton.fail = True  # the only replica unreachable: still deployed here, down
    assert (await served.snapshot()).down(entry)


async def test_the_served_set_is_known_only_once_triton_has_answered(monkeypatch):
    """The catalog is not healthy before (every request would be UNAVAILABLE): watch() asks again every
    FIRST_POLL_SECONDS until Triton answers, then known() returns."""
    from llmaas.catalog import served as served_module
    monkeypatch.setattr(served_module, "FIRST_POLL_SECONDS", 0.01)
    triton = FakeTriton("a-t")
    triton.fail = True
    served = served_by(triton)
    watcher = asyncio.create_task(served.watch(interval=60))
    try:
        known = asyncio.create_task(served.known())
        await asyncio.sleep(0.05)
        assert not known.done()
        triton.fail = False
        await asyncio.wait_for(known, 1.0)  # well before the 60 s interval
        assert _models(await served.snapshot()) == {"a-t"}
    finally:
        watcher.cancel()
