"""The router's cache of model resolutions (the catalog's ResolveModel), invalidated when the catalogue changes.

Keyed by (the name the client asked for, the tenant's serve_successor opt-in): the answer depends on nothing else.
Not-found answers (model_not_found, model_retired) are cached too; any other error never is.

Invalidation is pushed: CatalogWatcher keeps a WatchCatalog stream open to the catalog, which sends its revision at
once and again whenever the catalogue reloads or the set of served Triton models changes; every new revision empties
the cache. The cache is used only while that stream is up: before the first revision, after a stream error or a
silent stream (no message for HEARTBEAT_MISSES heartbeats), every request asks the catalog, and the watcher
reconnects with capped exponential backoff. An answer fetched while the cache was emptied is not stored (the
generation token), so a resolution made against the old catalogue cannot outlive the revision that replaced it.

TTL_SECONDS is a backstop, not the mechanism: phases follow the calendar (a model enters its notice or its end of
support at midnight) without the catalogue changing, so an entry lives at most that long.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Callable

import grpc

from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError

log = logging.getLogger("llmaas.router.model_cache")

TTL_SECONDS = 30.0
MAX_ENTRIES = 4096
# A stream that stays silent for this many heartbeats is treated as dead.
HEARTBEAT_MISSES = 3
FIRST_MESSAGE_SECONDS = 5.0
BACKOFF_MIN_SECONDS = 0.2
BACKOFF_MAX_SECONDS = 5.0

Key = tuple[str, bool]


def _copy(err: ApiError) -> ApiError:
    # A fresh exception per raise: raising one instance again and again would grow its traceback forever.
    return ApiError(err.status, err.message, type=err.type, param=err.param, code=err.code)


class ModelCache:
    def __init__(self, *, ttl: float = TTL_SECONDS, max_entries: int = MAX_ENTRIES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._entries: OrderedDict[Key, tuple[float, catalog_pb2.ResolveModelResponse | ApiError]] = OrderedDict()
        self._generation = 0
        self._revision: tuple[str, int] | None = None  # (catalog instance, revision); None: not subscribed

    @property
    def active(self) -> bool:
        return self._revision is not None

    @property
    def revision(self) -> tuple[str, int] | None:
        return self._revision

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: Key) -> catalog_pb2.ResolveModelResponse | None:
        """The cached resolution, None on a miss; raises the cached not-found error."""
        hit = self._entries.get(key)
        if hit is None:
            return None
        expires, value = hit
        if not self.active or self._clock() >= expires:
            del self._entries[key]
            return None
        self._entries.move_to_end(key)
        if isinstance(value, ApiError):
            raise _copy(value)
        return value

    def token(self) -> int:
        """Taken before asking the catalog; put() stores the answer only if no invalidation happened since."""
        return self._generation

    def put(self, key: Key, value: catalog_pb2.ResolveModelResponse | ApiError, token: int) -> None:
        if not self.active or token != self._generation:
            return
        if isinstance(value, ApiError):
            if value.status != grpc.StatusCode.NOT_FOUND:
                return
            value = _copy(value)
        self._entries[key] = (self._clock() + self._ttl, value)
        self._entries.move_to_end(key)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def _invalidate(self) -> None:
        self._entries.clear()
        self._generation += 1

    def on_revision(self, instance: str, revision: int) -> bool:
        """A message of the stream. True when it invalidated the cache (a new revision, or the first one)."""
        current = (instance, revision)
        if current == self._revision:
            return False  # a heartbeat
        self._invalidate()
        self._revision = current
        return True

    def unsubscribed(self) -> None:
        """The stream is down: nothing cached can be trusted any more, and nothing is cached until it is back."""
        self._invalidate()
        self._revision = None


class CatalogWatcher:
    """Keeps the cache subscribed to the catalog's revisions. `open_stream` starts a WatchCatalog call (an object
    with read() and cancel(), as grpc.aio's unary-stream calls have)."""

    def __init__(self, open_stream: Callable[[], object], cache: ModelCache, *,
                 backoff: tuple[float, float] = (BACKOFF_MIN_SECONDS, BACKOFF_MAX_SECONDS)) -> None:
        self._open = open_stream
        self._cache = cache
        self._backoff = backoff

    async def run(self) -> None:
        delay = self._backoff[0]
        while True:
            if await self._follow():
                delay = self._backoff[0]  # it worked for a while: reconnect quickly
            await asyncio.sleep(delay * random.uniform(0.5, 1.0))
            delay = min(delay * 2, self._backoff[1])

    async def _follow(self) -> bool:
        """One stream, until it ends or fails. True if at least one revision arrived."""
        call = self._open()
        timeout, received = FIRST_MESSAGE_SECONDS, False
        try:
            while True:
                message = await asyncio.wait_for(call.read(), timeout)
                if message is grpc.aio.EOF:
                    log.info("catalog watch ended; resolutions uncached until it is back")
                    return received
                if self._cache.on_revision(message.instance, message.revision):
                    log.info("catalog revision: resolution cache emptied",
                             extra={"fields": {"revision": message.revision, "instance": message.instance}})
                received = True
                timeout = HEARTBEAT_MISSES * (message.heartbeat_seconds or FIRST_MESSAGE_SECONDS)
        except TimeoutError:
            log.warning("catalog watch silent; resolutions uncached until it is back")
            return received
        except grpc.aio.AioRpcError as e:
            if received or e.code() != grpc.StatusCode.UNAVAILABLE:
                log.warning("catalog watch failed; resolutions uncached until it is back",
                            extra={"fields": {"code": e.code().name}})
            return received
        finally:
            self._cache.unsubscribed()
            call.cancel()
