"""Which Triton models are ready right now, asked of Triton itself (repository index), cached for a moment."""

from __future__ import annotations

import asyncio
import logging
import time

import grpc
import tritonclient.grpc.aio as triton_aio

from llmaas.common.errors import ApiError

log = logging.getLogger("llmaas.catalog.served")

CACHE_SECONDS = 2.0


class ServedModels:
    def __init__(self, triton_url: str) -> None:
        self._client = triton_aio.InferenceServerClient(url=triton_url)
        self._ready: frozenset[str] = frozenset()
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def ready(self) -> frozenset[str]:
        if time.monotonic() < self._expires:
            return self._ready
        async with self._lock:
            if time.monotonic() >= self._expires:
                try:
                    index = await self._client.get_model_repository_index(as_json=True)
                except Exception as e:  # tritonclient raises its own exception type for every failure
                    log.warning("triton repository index failed", extra={"fields": {"error": str(e)[:200]}})
                    raise ApiError(grpc.StatusCode.UNAVAILABLE, "The inference backend is temporarily unavailable",
                                   code="backend_unavailable") from None
                self._ready = frozenset(m["name"] for m in index.get("models", []) if m.get("state") == "READY")
                self._expires = time.monotonic() + CACHE_SECONDS
        return self._ready

    async def close(self) -> None:
        await self._client.close()
