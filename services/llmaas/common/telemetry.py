"""Tracing and logging, configured only from the standard OTEL_* variables.

Spans go to OTEL_EXPORTER_OTLP_ENDPOINT over OTLP/gRPC when it is set; otherwise tracing still propagates context
(so a caller's trace is continued downstream) but nothing is exported. Which requests are traced is decided once, at
the edge (Envoy), and every service follows the caller's sampled flag (OTEL_TRACES_SAMPLER, by default
`parentbased_traceidratio` with DEFAULT_TRACE_SAMPLING for the rare request that arrives without a parent). Logs are
one JSON object per line on stdout, with the current trace and span ids. Neither ever carries prompt or completion
text: span attributes are named in SPAN_ATTRIBUTES below, and only those may be set.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.sdk.trace.sampling import ParentBased, Sampler, TraceIdRatioBased

# Share of requests traced end to end when nothing else is said (`llmaas up --trace-sampling`, README "Tracing"):
# one request in twenty. Tracing a request costs every process on its path (spans, OTLP encoding, Jaeger, Triton),
# so production gateways sample; 5% still gives a trace within seconds at demo rates and 20 per second at 400 req/s.
DEFAULT_TRACE_SAMPLING = 0.05

# The project's own span attributes. Metadata only: ids, names, counts, decisions.
SPAN_ATTRIBUTES = {
    "llmaas.tenant_id": "tenant that made the request",
    "llmaas.key_id": "API key id (never the secret)",
    "llmaas.model": "public model id after alias resolution",
    "llmaas.model_cache": "the router's model resolution: hit (cached), miss (asked the catalog) or off (unsubscribed)",
    "llmaas.triton_model": "Triton model that served the request",
    "llmaas.triton_replica": "the Triton replica (gRPC address) an attempt went to; a retried request has several",
    "llmaas.stream": "whether the client asked for SSE",
    "llmaas.prompt_tokens": "input tokens reported by the backend",
    "llmaas.completion_tokens": "output tokens reported by the backend",
    "llmaas.finish_reason": "why generation stopped",
    "llmaas.guard.decision": "allow, flag (shadow mode) or block",
    "llmaas.guard.score": "guard score, 0..1",
    "llmaas.guard.mode": "the tenant's guard mode: enforce, shadow or off",
    "llmaas.guard.reasons": "reason codes of the guard's findings, comma-separated (never prompt text)",
    "llmaas.batch_id": "the batch a line belongs to (llmaas.router.batch)",
    "llmaas.batch_line": "a batch line's index in its input file (0-based)",
    "llmaas.request_id": "a batch line's request id, <batch>:<line>:<attempt> (metering's idempotency key)",
}


def default_sampler() -> Sampler | None:
    """None when OTEL_TRACES_SAMPLER is set (the SDK then reads it and OTEL_TRACES_SAMPLER_ARG itself); otherwise
    the caller's decision is followed and a root is sampled at DEFAULT_TRACE_SAMPLING, not at the SDK's 100%."""
    if os.environ.get("OTEL_TRACES_SAMPLER"):
        return None
    return ParentBased(TraceIdRatioBased(DEFAULT_TRACE_SAMPLING))


def sampler_env(ratio: float) -> dict[str, str]:
    """The OTEL_* variables that make a service follow its caller and sample its own roots at `ratio`."""
    return {"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": repr(float(ratio))}


def setup_tracing(service_name: str) -> TracerProvider:
    resource = Resource.create({"service.name": os.environ.get("OTEL_SERVICE_NAME", service_name)})
    provider = TracerProvider(resource=resource, sampler=default_sampler())
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"):
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    return provider


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        ctx = trace.get_current_span().get_span_context()
        if ctx.is_valid:
            entry["trace_id"] = format(ctx.trace_id, "032x")
            entry["span_id"] = format(ctx.span_id, "016x")
        extra = getattr(record, "fields", None)
        if extra:
            entry.update(extra)
        if record.exc_info:
            entry["exc"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


LOG_LEVEL_ENV = "LLMAAS_LOG_LEVEL"
LOG_LEVELS = ("debug", "info", "warning", "error")


def setup_logging() -> None:
    """One JSON object per line on stdout (with the trace and span ids inside a traced call): what a log shipper
    (Fluent Bit, Vector, Promtail, the OpenTelemetry collector's filelog receiver) reads as it is. The level comes from
    LLMAAS_LOG_LEVEL or the service's --log-level."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(os.environ.get(LOG_LEVEL_ENV, "INFO").upper())
