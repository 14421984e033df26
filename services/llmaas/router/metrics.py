"""The router's Prometheus metrics (llmaas.common.metrics serves them): requests by endpoint, model, HTTP status and
error code, their latency and the time of its stages (the checks before dispatch, the backend), time to first token
and output tokens per second by model, streams the client left, backend errors, output guard findings and which
replicas are in rotation. The same observations feed the public status (llmaas.router.status).

Every label is bounded: endpoints are the router's own constants, models the catalogue's ids ("" before one was
resolved: the client's string is never a label), error codes the platform's vocabulary, replicas the deployment's.
One request costs a few microseconds here (bench/metrics_cost.py).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmaas.common.metrics import LATENCY_BUCKETS, REGISTRY, Children
from llmaas.router.status import TRAFFIC

REQUESTS = Counter("llmaas_router_requests", "Requests the router answered, by endpoint, model, HTTP status and "
                   "error code (499: the client went away).", ["endpoint", "model", "status", "code"],
                   registry=REGISTRY)
REQUEST_SECONDS = Histogram("llmaas_router_request_seconds", "Time from a request's arrival at the router to its "
                            "end (a stream's last chunk).", ["endpoint", "model"], buckets=LATENCY_BUCKETS,
                            registry=REGISTRY)
TTFT_SECONDS = Histogram("llmaas_router_time_to_first_token_seconds", "Time from a chat request's arrival to the "
                         "model's first output token.", ["model"], registry=REGISTRY,
                         buckets=(.025, .05, .1, .2, .3, .5, .75, 1, 1.5, 2, 3, 5, 10, 20, 60))
TOKENS_PER_SECOND = Histogram("llmaas_router_output_tokens_per_second", "Output tokens per second of a completed "
                              "chat request, after its first token.", ["model"], registry=REGISTRY,
                              buckets=(1, 2, 5, 10, 20, 30, 50, 75, 100, 150, 200, 300, 500, 1000))
STAGE_SECONDS = Histogram("llmaas_router_stage_seconds", "Time a chat request spent in one stage, by stage and "
                          "model: `checks`, the guard's verdict and metering's grant (asked at once, before dispatch); "
                          "`backend`, from dispatch to the model's last response, once per generation (a request with n "
                          "choices runs n at once; retries on other replicas included). "
                          "What the request's time adds to them is the platform's own.", ["stage", "model"],
                          buckets=LATENCY_BUCKETS, registry=REGISTRY)
OUTPUT_TOKENS = Counter("llmaas_router_output_tokens", "Output tokens the models produced, by model.", ["model"],
                        registry=REGISTRY)
CANCELLED_STREAMS = Counter("llmaas_router_client_cancelled_streams", "Chat requests the client left before their "
                            "end, by model.", ["model"], registry=REGISTRY)
BACKEND_ERRORS = Counter("llmaas_router_backend_errors", "Failures of a Triton replica (scope `replica`: the server; "
                         "`model`: the model's instance on it), by replica address and model.",
                         ["replica", "model", "scope"], registry=REGISTRY)
OUTPUT_FINDINGS = Counter("llmaas_router_output_guard_findings", "Chat answers the output guard flagged "
                          "(llmaas.router.output_guard), by model, reason (exfiltration_image, exfiltration_link, "
                          "system_prompt_leak: one count per reason per answer) and guard mode (shadow: answered "
                          "unchanged; enforce: cut, finish_reason content_filter).", ["model", "reason", "mode"],
                          registry=REGISTRY)

_requests, _request_seconds, _stage = Children(REQUESTS), Children(REQUEST_SECONDS), Children(STAGE_SECONDS)
_ttft, _rate, _output, _cancelled = (Children(TTFT_SECONDS), Children(TOKENS_PER_SECOND), Children(OUTPUT_TOKENS),
                                     Children(CANCELLED_STREAMS))


def request_ended(endpoint: str, model: str, status: int, code: str, started: float) -> None:
    """Any request's end, once (from its audit record: llmaas.router.pipeline)."""
    seconds = time.perf_counter() - started
    _requests(endpoint, model, str(status), code).inc()
    _request_seconds(endpoint, model).observe(seconds)
    if model:
        TRAFFIC.request(model, status)


def stage_ended(stage: str, model: str, started: float) -> None:
    """A chat request's stage (STAGE_SECONDS) that began at `started` (time.perf_counter) ends now."""
    _stage(stage, model).observe(time.perf_counter() - started)


def chat_ended(model: str, outcome: str, started: float, first_token: float, output_tokens: int,
               stream: bool, generations: int = 1) -> None:
    """A dispatched chat request's end: its time to first token and its output rate (0: no token came). A request
    with several choices ran `generations` at once: its rate is per generation, as a single answer's."""
    if outcome == "cancelled" and stream:
        _cancelled(model).inc()
    if output_tokens:
        _output(model).inc(output_tokens)
    if not first_token or not stream:
        # A non-streamed answer comes whole from the backend (llmaas.router.triton `whole`): it has no first token,
        # and its rate would include the queue and the prompt. Latency and rate come from streamed requests.
        return
    ttft = first_token - started
    _ttft(model).observe(ttft)
    rate = None
    if outcome == "completed" and output_tokens > generations:
        elapsed = time.perf_counter() - first_token
        if elapsed > 0:
            rate = (output_tokens / generations - 1) / elapsed
            _rate(model).observe(rate)
    TRAFFIC.latency(model, ttft, rate)


def output_finding(model: str, reason: str, mode: str) -> None:
    OUTPUT_FINDINGS.labels(model, reason, mode).inc()


def backend_error(replica: str, model: str, model_level: bool) -> None:
    BACKEND_ERRORS.labels(replica, model if model_level else "", "model" if model_level else "replica").inc()


class ReplicaHealth(Collector):
    """llmaas_router_replica_in_rotation{replica, model}: 1 when the router sends requests there, 0 while its circuit
    breaker keeps it out (model "": the whole replica). Read at scrape time from the replica pool."""

    def __init__(self, breakers: Callable[[], Iterable[tuple[str, str | None, bool]]]) -> None:
        self._breakers = breakers

    def collect(self):
        family = GaugeMetricFamily("llmaas_router_replica_in_rotation", "1 while the router sends requests to a "
                                   "replica (model \"\": the whole server), 0 while its circuit breaker keeps it out.",
                                   labels=["replica", "model"])
        for replica, model, closed in self._breakers():
            family.add_metric([replica, model or ""], 1.0 if closed else 0.0)
        yield family


def watch_replicas(breakers: Callable[[], Iterable[tuple[str, str | None, bool]]]) -> None:
    REGISTRY.register(ReplicaHealth(breakers))
