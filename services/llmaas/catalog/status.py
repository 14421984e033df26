"""The serving side of the public status (the router's GET /v1/status adds its traffic: llmaas.router.status): each
deployed model's replicas, the share of the last hour and day it was served, and the incidents now.

Availability is sampled, not inferred from traffic: every SAMPLE_SECONDS the served set (llmaas.catalog.served, which
polls Triton every second) says whether some replica serves each model; a model nobody calls still has one. Kept
in memory by minute for a day (a restarted catalog starts a new history). Several catalog replicas each poll every
Triton replica themselves, so they sample the same state.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable

from llmaas.catalog.entries import Catalog, ModelEntry
from llmaas.catalog.served import ServedModels, Snapshot
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError

SAMPLE_SECONDS = 5.0
MINUTES_24H = 24 * 60


class ServingHistory:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        # Model id -> [minute, samples served, samples], oldest first.
        self._minutes: dict[str, deque[list[int]]] = {}
        # Incident key -> Unix seconds first seen (dropped when it ends).
        self._since: dict[tuple[str, str, int], int] = {}

    @staticmethod
    def deployed(catalog: Catalog, snapshot: Snapshot) -> list[ModelEntry]:
        """The models this platform runs: served now, or deployed and down."""
        return [m for m in catalog.models if snapshot.served(m) or snapshot.down(m)]

    def sample(self, catalog: Catalog, snapshot: Snapshot) -> None:
        minute = int(self._clock() // 60)
        for entry in self.deployed(catalog, snapshot):
            minutes = self._minutes.setdefault(entry.id, deque())
            if not minutes or minutes[-1][0] != minute:
                minutes.append([minute, 0, 0])
                while minutes[0][0] <= minute - MINUTES_24H:
                    minutes.popleft()
            minutes[-1][1] += snapshot.served(entry)
            minutes[-1][2] += 1

    def availability(self, model: str, minutes_back: int) -> float | None:
        minute = int(self._clock() // 60)
        served = samples = 0
        for m, up, n in self._minutes.get(model, ()):
            if m > minute - minutes_back:
                served, samples = served + up, samples + n
        return round(served / samples, 5) if samples else None

    def status(self, catalog: Catalog, snapshot: Snapshot,
               incidents: tuple[frozenset[str], frozenset[tuple[str, str]]]) -> catalog_pb2.GetServingStatusResponse:
        down, reloading = incidents
        now = int(self._clock())
        current: set[tuple[str, str, int]] = set()
        models = []
        for entry in self.deployed(catalog, snapshot):
            pool = snapshot.pools.replicas(entry.pool)
            found = [("replica_down", i) for i, a in enumerate(pool, 1) if a in down]
            found += [("model_reloading", i) for i, a in enumerate(pool, 1)
                      if (a, entry.triton_model) in reloading]
            if not snapshot.served(entry):
                found.append(("model_unavailable", 0))
            keys = [(entry.id, kind, replica) for kind, replica in found]
            current.update(keys)
            models.append(catalog_pb2.ServingStatus(
                id=entry.id, replicas=len(pool), replicas_serving=len(snapshot.replicas(entry)),
                availability_1h=self.availability(entry.id, 60), availability_24h=self.availability(entry.id, MINUTES_24H),
                incidents=[catalog_pb2.Incident(kind=k[1], replica=k[2], since=self._since.setdefault(k, now))
                           for k in keys]))
        for ended in self._since.keys() - current:
            del self._since[ended]
        return catalog_pb2.GetServingStatusResponse(models=models, sample_seconds=int(SAMPLE_SECONDS))


async def sample_forever(history: ServingHistory, served: ServedModels, catalog: Callable[[], Catalog],
                         interval: float = SAMPLE_SECONDS) -> None:
    """Samples the served set every `interval` (the catalog's background task), and notes when incidents start."""
    while True:
        try:
            current, snapshot = catalog(), await served.snapshot()
            history.sample(current, snapshot)
            history.status(current, snapshot, served.incidents())
        except ApiError:
            # No replica has answered yet: nothing is deployed as far as this catalog knows. Sampled as soon as one
            # does, so that the status shows an availability from the start.
            await served.known()
            continue
        await asyncio.sleep(interval)
