"""Prometheus metrics of every llmaas service: one registry per process, served over HTTP on LLMAAS_METRICS_PORT
(started by llmaas.common.server.serve), and the per-RPC counts and latency every gRPC server records
(MetricsInterceptor).

Labels are bounded: service, method, status code, model id (from the catalogue), endpoint (the platform's routes),
error codes and reasons (the platform's own vocabularies). Never a key id, a tenant id or any client-chosen string,
unless the operator opts in (LLMAAS_METRICS_TENANT_LABELS, metering's per-tenant spend), and never prompt text.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server

log = logging.getLogger("llmaas.metrics")

REGISTRY = CollectorRegistry()
PORT_ENV = "LLMAAS_METRICS_PORT"
TENANT_LABELS_ENV = "LLMAAS_METRICS_TENANT_LABELS"
# The tenant label's value when per-tenant labels are off: every tenant counted together.
ALL_TENANTS = "all"

# Latency buckets from a cached auth check (sub-millisecond) to a long generation (minutes).
LATENCY_BUCKETS = (.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60, 120, 300)

RPCS = Counter("llmaas_grpc_server_handled", "gRPC calls a service answered, by method and status code.",
               ["service", "method", "code"], registry=REGISTRY)
RPC_SECONDS = Histogram("llmaas_grpc_server_handling_seconds", "Time from a gRPC call's start to its end (a stream's "
                        "last message).", ["service", "method"], buckets=LATENCY_BUCKETS, registry=REGISTRY)

_tenant_labels = os.environ.get(TENANT_LABELS_ENV, "") in ("1", "true", "yes")


def tenant_labels_enabled() -> bool:
    return _tenant_labels


def tenant_label(tenant_id: str) -> str:
    """The tenant as a label value: its id only when the operator opted in (one series per tenant)."""
    return tenant_id if _tenant_labels else ALL_TENANTS


def start_metrics_server(port: int) -> None:
    """Serves the registry on http://LLMAAS_BIND_HOST:port/metrics, from a daemon thread (a scrape never runs on the
    event loop)."""
    if port:
        start_http_server(port, addr=os.environ.get("LLMAAS_BIND_HOST", "127.0.0.1"), registry=REGISTRY)
        log.info("metrics", extra={"fields": {"port": port}})


class Children:
    """A labelled metric's children by label values, each resolved once: labels() validates and locks on every call
    (about 1.5 us), a dict hit costs a tenth of that. Only for bounded label sets (as every label here is)."""

    __slots__ = ("_metric", "_found")

    def __init__(self, metric) -> None:
        self._metric = metric
        self._found: dict[tuple[str, ...], object] = {}

    def __call__(self, *values: str):
        child = self._found.get(values)
        if child is None:
            child = self._found[values] = self._metric.labels(*values)
        return child


# The interceptor of this process's server (one per service process).
_process: MetricsInterceptor | None = None


def _short(method: str) -> str:
    """"/llmaas.router.v1.RouterService/ChatCompletionsHttp" -> "RouterService/ChatCompletionsHttp"."""
    service, _, name = method.rpartition("/")
    return f"{service.rpartition('.')[2]}/{name}"


def count_call(method: str, code: str, seconds: float) -> None:
    """A call that reached its handler without the interceptor (one of the calls carried by a call stream,
    llmaas.common.call_stream), counted as the unary call would have been. Nothing without a server."""
    if _process is not None:
        _process.count(method, code, seconds)


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts each call by method and final status, and times it. Methods are the server's own (an unknown method
    gets no handler and is not counted), so the label set is bounded. Health checks are left out (probes every
    second would drown the rest)."""

    def __init__(self, service: str) -> None:
        global _process
        self._service = service
        _process = self
        # Per method: its histogram child and its counters by code, resolved once (labels() costs a dict lookup and a
        # lock; the children do not).
        self._children: dict[str, tuple[object, dict[str, object], str]] = {}

    def _child(self, method: str):
        found = self._children.get(method)
        if found is None:
            short = _short(method)
            found = self._children[method] = (RPC_SECONDS.labels(self._service, short), {}, short)
        return found

    def count(self, method: str, code: str, seconds: float) -> None:
        histogram, counters, short = self._child(method)
        counter = counters.get(code)
        if counter is None:
            counter = counters[code] = RPCS.labels(self._service, short, code)
        counter.inc()
        histogram.observe(seconds)

    async def intercept_service(self, continuation, handler_call_details):
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or method.startswith("/grpc.health."):
            return handler
        if handler.unary_unary:
            return handler._replace(unary_unary=self._unary(handler.unary_unary, method))
        if handler.unary_stream:
            return handler._replace(unary_stream=self._stream(handler.unary_stream, method))
        return handler

    def _unary(self, behavior, method: str):
        async def wrapper(request, context):
            start = time.perf_counter()
            code = "OK"
            try:
                return await behavior(request, context)
            except asyncio.CancelledError:
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code(context)
                raise
            finally:
                self.count(method, code, time.perf_counter() - start)

        return wrapper

    def _stream(self, behavior, method: str):
        async def wrapper(request, context):
            start = time.perf_counter()
            code = "OK"
            try:
                async for item in behavior(request, context):
                    yield item
            except (asyncio.CancelledError, GeneratorExit):
                code = "CANCELLED"
                raise
            except BaseException:
                code = _code(context)
                raise
            finally:
                self.count(method, code, time.perf_counter() - start)

        return wrapper


def _code(context) -> str:
    """The status the call ended with (set by context.abort); UNKNOWN if none was set."""
    try:
        code = context.code()
    except Exception:  # noqa: BLE001 - a context without code() (a test's stand-in)
        code = None
    if isinstance(code, grpc.StatusCode):
        return code.name
    return "UNKNOWN"
