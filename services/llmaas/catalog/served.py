"""Which Triton models are ready right now, asked of Triton itself (repository index), cached for a moment.

`watch()` asks again every CACHE_SECONDS in the background, so that a model Triton loads or unloads is noticed
without waiting for a request: a set that differs from the previous one calls `on_change` (the catalog service moves
its revision, llmaas.catalog.watch, which invalidates the router's cache).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

import grpc
import tritonclient.grpc.aio as triton_aio

from llmaas.common.errors import ApiError

log = logging.getLogger("llmaas.catalog.served")

CACHE_SECONDS = 2.0
FIRST_POLL_SECONDS = 0.2
# The poll starts with the stack, usually before Triton listens: gRPC's default reconnect backoff (growing to two
# minutes) would keep reporting "unavailable" long after Triton is up. Retry the connection at least every second.
_CHANNEL_ARGS = [("grpc.initial_reconnect_backoff_ms", 200), ("grpc.min_reconnect_backoff_ms", 200),
                 ("grpc.max_reconnect_backoff_ms", 1000)]


class ServedModels:
    def __init__(self, triton_url: str, *, on_change: Callable[[], None] | None = None, client=None) -> None:
        self._client = client if client is not None else triton_aio.InferenceServerClient(
            url=triton_url, channel_args=_CHANNEL_ARGS)
        self._on_change = on_change
        self._ready: frozenset[str] = frozenset()
        self._known = asyncio.Event()  # set once _ready came from Triton
        self._failing = False
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def ready(self) -> frozenset[str]:
        if time.monotonic() < self._expires:
            return self._ready
        async with self._lock:
            if time.monotonic() >= self._expires:
                await self._fetch()
        return self._ready

    async def _fetch(self) -> None:
        try:
            index = await self._client.get_model_repository_index(as_json=True)
        except Exception as e:  # tritonclient raises its own exception type for every failure
            if not self._failing:  # once per outage, not at every poll
                log.warning("triton repository index failed", extra={"fields": {"error": str(e)[:200]}})
            self._failing = True
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "The inference backend is temporarily unavailable",
                           code="backend_unavailable") from None
        if self._failing:
            log.info("triton repository index answers again")
        self._failing = False
        ready = frozenset(m["name"] for m in index.get("models", []) if m.get("state") == "READY")
        changed = self._known.is_set() and ready != self._ready
        self._ready = ready
        self._known.set()
        self._expires = time.monotonic() + CACHE_SECONDS
        if changed:
            log.info("served models changed", extra={"fields": {"models": sorted(ready)}})
            if self._on_change is not None:
                self._on_change()

    async def known(self) -> None:
        """Returns once Triton's model index has been read: before, every request would be UNAVAILABLE."""
        await self._known.wait()

    async def watch(self, interval: float = CACHE_SECONDS) -> None:
        while True:
            try:
                await self.ready()
            except ApiError:
                pass  # logged once per outage; requests meanwhile get UNAVAILABLE from ready()
            # Until Triton first answers, ask again soon: the service is not healthy before.
            await asyncio.sleep(interval if self._known.is_set() else FIRST_POLL_SECONDS)

    async def close(self) -> None:
        await self._client.close()
