"""The public status (GET /v1/status): each public model's serving state from the catalog, and its recent traffic as
this router saw it.

Ownership: the router answers it because only the router sees the traffic (time to first token, output rate,
failures); the catalog, which sees the served state, gives the availability (the share of its 5-second samples in
which some replica served the model) and the incidents now (replica down, model reloading, model unavailable) through
CatalogInternalService.GetServingStatus.

Several router replicas: Envoy sends each GET /v1/status to any one of them, and that one answers with the traffic
it served itself (a balanced share of the whole, so its medians and success rate estimate the platform's; a router
that just started has less history). The served state and the incidents are the catalog's, the same whichever
router answers. A fleet-wide exact view is Prometheus' job (deploy/observability: the same figures from every
replica's metrics).

Delay: the catalog polls every replica each second (a replica that does not answer within 2 s is down) and samples
the served state every 5 s for the availability; an answer is cached for STATUS_CACHE_SECONDS. A replica killed shows
as an incident (`replica_down`, or `model_reloading` once a restarted server answers before its models are ready)
within STATUS_DELAY_SECONDS.

Nothing here identifies a tenant: counts and timings by model only.
"""

from __future__ import annotations

import time
import uuid
from collections import deque
from collections.abc import Awaitable, Callable

from llmaas.catalog.v1 import catalog_pb2
from llmaas.router.v1 import router_pb2

MINUTES_1H, MINUTES_24H = 60, 24 * 60
LATENCY_WINDOW_SECONDS = 300.0
# The samples kept per model for the 5-minute medians (the newest): bounded memory and sort time under any load.
MAX_SAMPLES = 2048
STATUS_CACHE_SECONDS = 1.0
# The most a change of serving state takes to show: the catalog's poll (1 s) and answer timeout (2 s), this cache.
STATUS_DELAY_SECONDS = 5.0


class _ModelTraffic:
    __slots__ = ("minutes", "samples")

    def __init__(self) -> None:
        # [minute, requests, failed], oldest first, one per minute that had traffic (24 h at most).
        self.minutes: deque[list[int]] = deque()
        # (monotonic time, ttft seconds, output tokens per second or None), newest last.
        self.samples: deque[tuple[float, float, float | None]] = deque(maxlen=MAX_SAMPLES)


class Traffic:
    """Per-model counts by minute (a day) and latency samples (5 minutes). O(1) per request."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._models: dict[str, _ModelTraffic] = {}

    def _model(self, model: str) -> _ModelTraffic:
        found = self._models.get(model)
        if found is None:
            found = self._models[model] = _ModelTraffic()
        return found

    def request(self, model: str, status: int) -> None:
        minutes = self._model(model).minutes
        minute = int(self._clock() // 60)
        if not minutes or minutes[-1][0] != minute:
            minutes.append([minute, 0, 0])
            while minutes[0][0] <= minute - MINUTES_24H:
                minutes.popleft()
        bucket = minutes[-1]
        bucket[1] += 1
        if status >= 500:  # the platform failed it; a refusal (4xx) or a client gone (499) is not a failure
            bucket[2] += 1

    def latency(self, model: str, ttft: float, tokens_per_second: float | None) -> None:
        self._model(model).samples.append((self._clock(), ttft, tokens_per_second))

    def summary(self, model: str) -> dict:
        """success_rate_1h/24h, requests_1h, ttft_p50_ms, tokens_per_second_p50, samples_5m (None: no data)."""
        traffic = self._models.get(model)
        out: dict = {"requests_1h": 0, "samples_5m": 0}
        if traffic is None:
            return out
        now = self._clock()
        minute = int(now // 60)
        for key, span in (("1h", MINUTES_1H), ("24h", MINUTES_24H)):
            requests = failed = 0
            for m, n, f in traffic.minutes:
                if m > minute - span:
                    requests, failed = requests + n, failed + f
            if key == "1h":
                out["requests_1h"] = requests
            if requests:
                out[f"success_rate_{key}"] = round(1 - failed / requests, 5)
        recent = [s for s in traffic.samples if s[0] >= now - LATENCY_WINDOW_SECONDS]
        out["samples_5m"] = len(recent)
        if recent:
            out["ttft_p50_ms"] = round(_median([s[1] for s in recent]) * 1000, 1)
            rates = [s[2] for s in recent if s[2] is not None]
            if rates:
                out["tokens_per_second_p50"] = round(_median(rates), 2)
        return out


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


# The router process's traffic (llmaas.router.metrics feeds it).
TRAFFIC = Traffic()


def _model_state(serving: catalog_pb2.ServingStatus) -> str:
    if serving.replicas_serving == 0:
        return "outage"
    return "degraded" if serving.incidents else "operational"


_SEVERITY = {"operational": 0, "degraded": 1, "outage": 2}


class StatusPage:
    """Builds GetStatusResponse from the catalog's serving status and this router's traffic, cached briefly (a
    public, unauthenticated endpoint: a flood of it costs one catalog call per second)."""

    def __init__(self, serving_status: Callable[[], Awaitable[catalog_pb2.GetServingStatusResponse]],
                 traffic: Traffic = TRAFFIC, source: str | None = None) -> None:
        self._serving_status = serving_status
        self._traffic = traffic
        # Which router replica answered (a random id per process: tells replicas apart, names no host).
        self._source = source if source is not None else "router-" + uuid.uuid4().hex[:8]
        self._cached: router_pb2.GetStatusResponse | None = None
        self._expires = 0.0

    async def get(self) -> router_pb2.GetStatusResponse:
        now = time.monotonic()
        if self._cached is None or now >= self._expires:
            self._cached = self.build(await self._serving_status())
            self._expires = time.monotonic() + STATUS_CACHE_SECONDS
        return self._cached

    def build(self, serving: catalog_pb2.GetServingStatusResponse) -> router_pb2.GetStatusResponse:
        data = []
        for model in serving.models:
            state = _model_state(model)
            entry = router_pb2.ModelStatus(
                id=model.id, status=state, replicas=model.replicas, replicas_serving=model.replicas_serving,
                incidents=[router_pb2.Incident(kind=i.kind, replica=i.replica, since=i.since)
                           for i in model.incidents],
                **self._traffic.summary(model.id))
            for window in ("availability_1h", "availability_24h"):
                if model.HasField(window):
                    setattr(entry, window, getattr(model, window))
            data.append(entry)
        overall = max((d.status for d in data), key=_SEVERITY.__getitem__, default="operational")
        return router_pb2.GetStatusResponse(object="status", status=overall, updated_at=int(time.time()),
                                            data=data, source=self._source)

