"""The router's resolution cache: used only while subscribed to the catalog's revisions, emptied by each new one,
with a TTL backstop; and the whole loop in-process: catalog reload -> WatchCatalog -> router cache."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import pytest
from llmaas.catalog.reload import CatalogSource
from llmaas.catalog.servicer import CatalogServicer
from llmaas.catalog.v1 import catalog_pb2, catalog_pb2_grpc
from llmaas.catalog.watch import Revisions
from llmaas.common.errors import ApiError
from llmaas.common.identity import Identity, encode_identity
from llmaas.common.server import ErrorInterceptor
from llmaas.common.service_auth import ROUTER, ServiceAuthInterceptor, ServiceCredentials
from llmaas.router import model_cache
from llmaas.router.downstream import Downstream
from llmaas.router.model_cache import CatalogWatcher, ModelCache

from tests.unit.test_catalog_successor import FakeTriton, served_by


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def resolved(model_id: str) -> catalog_pb2.ResolveModelResponse:
    return catalog_pb2.ResolveModelResponse(id=model_id, triton_model=model_id + "-t")


def not_found(code: str = "model_not_found") -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, "gone", param="model", code=code)


KEY = ("m", False)


def test_nothing_is_cached_until_subscribed_nor_after_the_stream_drops():
    cache = ModelCache()
    cache.put(KEY, resolved("m"), cache.token())
    assert not cache.active and cache.get(KEY) is None and len(cache) == 0
    cache.on_revision("cat-1", 1)
    cache.put(KEY, resolved("m"), cache.token())
    assert cache.get(KEY).id == "m"
    cache.unsubscribed()
    assert not cache.active and cache.get(KEY) is None and len(cache) == 0


def test_a_new_revision_empties_the_cache_a_heartbeat_does_not():
    cache = ModelCache()
    assert cache.on_revision("cat-1", 1) is True
    cache.put(KEY, resolved("m"), cache.token())
    assert cache.on_revision("cat-1", 1) is False and cache.get(KEY) is not None  # heartbeat
    assert cache.on_revision("cat-1", 2) is True and cache.get(KEY) is None
    cache.put(KEY, resolved("m"), cache.token())
    assert cache.on_revision("cat-2", 2) is True and cache.get(KEY) is None  # a restarted catalog


def test_an_answer_fetched_across_an_invalidation_is_not_stored():
    cache = ModelCache()
    cache.on_revision("cat-1", 1)
    token = cache.token()  # the request asks the catalog...
    cache.on_revision("cat-1", 2)  # ...the catalogue changes meanwhile...
    cache.put(KEY, resolved("old answer"), token)  # ...so its answer may be stale
    assert cache.get(KEY) is None


def test_ttl_backstop_and_opt_in_keys():
    clock = Clock()
    cache = ModelCache(ttl=30, clock=clock)
    cache.on_revision("cat-1", 1)
    cache.put(("old", False), not_found("model_retired"), cache.token())
    cache.put(("old", True), resolved("new"), cache.token())
    assert cache.get(("old", True)).id == "new"
    with pytest.raises(ApiError) as e:
        cache.get(("old", False))
    assert e.value.code == "model_retired"
    clock.now += 30
    assert cache.get(("old", True)) is None and cache.get(("old", False)) is None


def test_only_not_found_errors_are_cached_and_each_raise_is_a_fresh_error():
    cache = ModelCache()
    cache.on_revision("cat-1", 1)
    cache.put(("down", False), ApiError(grpc.StatusCode.UNAVAILABLE, "later"), cache.token())
    assert cache.get(("down", False)) is None
    cache.put(("nope", False), not_found(), cache.token())
    raised = []
    for _ in range(2):
        with pytest.raises(ApiError) as e:
            cache.get(("nope", False))
        raised.append(e.value)
    assert raised[0] is not raised[1] and raised[0].code == raised[1].code == "model_not_found"


def test_size_is_bounded_least_recently_used_first():
    cache = ModelCache(max_entries=2)
    cache.on_revision("cat-1", 1)
    for name in ("a", "b"):
        cache.put((name, False), resolved(name), cache.token())
    cache.get(("a", False))
    cache.put(("c", False), resolved("c"), cache.token())
    assert cache.get(("b", False)) is None and cache.get(("a", False)) and cache.get(("c", False))


# The watcher, against a scripted stream.

class ScriptedCall:
    def __init__(self, *items) -> None:
        self._items = asyncio.Queue()
        for item in items:
            self._items.put_nowait(item)
        self.cancelled = False

    def push(self, item) -> None:
        self._items.put_nowait(item)

    async def read(self):
        item = await self._items.get()
        if isinstance(item, Exception):
            raise item
        return item

    def cancel(self) -> None:
        self.cancelled = True


def revision(n: int, instance: str = "cat-1", heartbeat: int = 10) -> catalog_pb2.CatalogRevision:
    return catalog_pb2.CatalogRevision(revision=n, instance=instance, heartbeat_seconds=heartbeat)


def unavailable() -> grpc.aio.AioRpcError:
    return grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")


async def until(condition, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not reached"
        await asyncio.sleep(0.01)


async def test_watcher_subscribes_invalidates_and_reconnects_after_a_failure():
    cache = ModelCache()
    first, second = ScriptedCall(revision(1)), ScriptedCall(revision(1, instance="cat-2"))
    calls = iter([first, second])
    task = asyncio.create_task(CatalogWatcher(lambda: next(calls), cache, backoff=(0.01, 0.05)).run())
    try:
        await until(lambda: cache.revision == ("cat-1", 1))
        cache.put(KEY, resolved("m"), cache.token())
        first.push(revision(1))  # heartbeat: kept
        first.push(revision(2))
        await until(lambda: cache.revision == ("cat-1", 2))
        assert cache.get(KEY) is None
        cache.put(KEY, resolved("m"), cache.token())
        first.push(unavailable())  # the catalog restarts
        await until(lambda: cache.revision == ("cat-2", 1))
        assert first.cancelled and cache.get(KEY) is None
    finally:
        task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not cache.active and second.cancelled


async def test_a_silent_or_ended_stream_stops_the_caching(monkeypatch):
    monkeypatch.setattr(model_cache, "FIRST_MESSAGE_SECONDS", 0.05)
    cache = ModelCache()
    silent, ended = ScriptedCall(), ScriptedCall(revision(1, heartbeat=0), grpc.aio.EOF)
    opened = []

    def open_stream():
        opened.append(call := silent if not opened else ended if len(opened) == 1 else ScriptedCall())
        return call

    task = asyncio.create_task(CatalogWatcher(open_stream, cache, backoff=(0.01, 0.02)).run())
    try:
        await until(lambda: len(opened) >= 3)  # silent: timed out; ended: EOF; then a third attempt
        assert silent.cancelled and ended.cancelled and not cache.active
    finally:
        task.cancel()


# The whole loop in-process: a real catalog servicer behind a real gRPC server, the router's Downstream and watcher.

CATALOG = """
models:
  - {{id: m, editor: e, type: chat, production_date: 2020-01-01, licence: x, max_model_len: 64,
     default_max_tokens: {max_tokens}, triton_model: m-t, pool: p}}
"""


class CountingCatalog(CatalogServicer):
    resolves = 0

    async def ResolveModel(self, request, context):
        self.resolves += 1
        return await super().ResolveModel(request, context)


async def test_a_catalogue_reload_reaches_the_router_cache_at_once(tmp_path: Path):
    path = tmp_path / "catalog.yaml"
    path.write_text(CATALOG.format(max_tokens=8))
    revisions = Revisions(heartbeat=1)
    source = CatalogSource([path], on_change=lambda: revisions.bump("test"))
    servicer = CountingCatalog(source, served_by(FakeTriton("m-t")), "secret", revisions)
    # As the catalog serves it: its internal service behind the service credential check.
    server = grpc.aio.server(interceptors=[ErrorInterceptor(), ServiceAuthInterceptor("catalog", "secret")])
    catalog_pb2_grpc.add_CatalogInternalServiceServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    cache = ModelCache()
    downstream = Downstream("127.0.0.1:1", "127.0.0.1:1", f"127.0.0.1:{port}", "127.0.0.1:1", model_cache=cache,
                            credentials=ServiceCredentials(ROUTER, "secret"))
    signed = encode_identity(Identity("t", "k"), "secret", request_id="r")
    watcher = asyncio.create_task(CatalogWatcher(downstream.watch_catalog, cache).run())
    try:
        await until(lambda: cache.active)
        assert (await downstream.resolve_model("m", identity=signed)).default_max_tokens == 8
        assert (await downstream.resolve_model("m", identity=signed)).default_max_tokens == 8
        assert servicer.resolves == 1  # the second came from the cache
        with pytest.raises(ApiError):
            await downstream.resolve_model("nope", identity=signed)
        with pytest.raises(ApiError):
            await downstream.resolve_model("nope", identity=signed)
        assert servicer.resolves == 2

        path.write_text(CATALOG.format(max_tokens=16) + "\n")
        assert source.refresh()  # what the catalog's poller does within a second
        await until(lambda: len(cache) == 0)
        assert (await downstream.resolve_model("m", identity=signed)).default_max_tokens == 16 and servicer.resolves == 3

        revisions.close()  # the catalog stops: its streams end, the router stops caching
        await until(lambda: not cache.active)
        await downstream.resolve_model("m", identity=signed)
        assert servicer.resolves == 4
    finally:
        watcher.cancel()
        await downstream.close()
        await server.stop(None)
