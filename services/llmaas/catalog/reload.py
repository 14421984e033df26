"""The catalogue in force, reloaded without a restart when one of its files changes.

A file that fails validation is refused with a logged error naming the model and field, and the previous catalogue
stays in force; the same broken content is not retried until the file changes again. Polling (once a second) keeps
this working on every filesystem and with editors that replace files instead of writing them. Each new catalogue
calls `on_change` (the catalog service moves its revision, llmaas.catalog.watch, which invalidates the router's
cache).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from llmaas.catalog.entries import Catalog, CatalogError, load_catalog

log = logging.getLogger("llmaas.catalog.reload")

POLL_SECONDS = 1.0


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_mtime_ns, st.st_size


class CatalogSource:
    def __init__(self, paths: list[Path], *, on_change: Callable[[], None] | None = None) -> None:
        self._paths = list(paths)
        self._on_change = on_change
        self._stamps = [_stamp(p) for p in self._paths]
        self.current: Catalog = load_catalog(self._paths)  # at start a bad catalogue is fatal
        self.last_error: str | None = None

    def refresh(self) -> bool:
        """Reloads if a file changed. True when a new catalogue came into force."""
        stamps = [_stamp(p) for p in self._paths]
        if stamps == self._stamps:
            return False
        self._stamps = stamps
        try:
            catalog = load_catalog(self._paths)
        except CatalogError as e:
            self.last_error = str(e)
            log.error("catalogue refused, previous one stays in force", extra={"fields": {"error": str(e)}})
            return False
        self.current, self.last_error = catalog, None
        log.info("catalogue reloaded", extra={"fields": {"models": len(catalog.models)}})
        if self._on_change is not None:
            self._on_change()
        return True

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(POLL_SECONDS)
            self.refresh()
