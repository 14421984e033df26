"""The catalogue's revision: a counter that moves whenever what ResolveModel answers may have changed, and the
streams (WatchCatalog) that push it to the router, whose resolution cache it invalidates.

It moves when a new catalogue comes into force (llmaas.catalog.reload) and when the set of models Triton serves
changes (llmaas.catalog.served). Phases also change with the date; the router's cache has a short TTL for that.
Every stream gets the current revision at once, then each new one (changes in quick succession may be coalesced:
only the latest matters), and the same one again every `heartbeat` seconds so that the router can tell a live
stream from a dead one. Everything runs on the service's event loop.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import AsyncIterator

log = logging.getLogger("llmaas.catalog.watch")

HEARTBEAT_SECONDS = 10.0


class Revisions:
    def __init__(self, heartbeat: float = HEARTBEAT_SECONDS) -> None:
        self.instance = secrets.token_hex(8)  # tells a restarted catalog from the one before
        self.value = 1
        self.heartbeat = heartbeat
        self._changed = asyncio.Event()
        self._closed = False

    def bump(self, reason: str) -> None:
        self.value += 1
        log.info("catalog revision", extra={"fields": {"revision": self.value, "reason": reason}})
        self._wake()

    def close(self) -> None:
        """Ends every stream (the service is stopping: subscribers reconnect to another instance or wait)."""
        self._closed = True
        self._wake()

    def _wake(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def stream(self) -> AsyncIterator[int]:
        sent = 0
        while not self._closed:
            changed = self._changed  # taken before the check: a bump after it sets this very event
            if self.value != sent:
                sent = self.value
                yield sent
                continue
            try:
                await asyncio.wait_for(changed.wait(), self.heartbeat)
            except TimeoutError:
                yield sent
