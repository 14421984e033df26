"""Trace sampling: the edge decides, every hop follows; an unsampled call carries only its context (no span), a
sampled one gets exactly the spans and attributes of the OpenTelemetry grpc instrumentation; the stack passes one
ratio to Envoy, the services and (as "follow the traceparent") Triton."""

from __future__ import annotations

import secrets
from pathlib import Path

import grpc
import pytest
import yaml
from llmaas.cli.main import app
from llmaas.common import grpc_tracing
from llmaas.common.grpc_tracing import (
    SamplingChannel,
    SamplingServerInterceptor,
    drops_unsampled_parents,
    parse_traceparent,
    sampled_trace_headers,
)
from llmaas.common.server import ErrorInterceptor
from llmaas.common.telemetry import DEFAULT_TRACE_SAMPLING, default_sampler, sampler_env
from llmaas.stack import envoy
from llmaas.stack.ports import StackPorts
from llmaas.stack.services import service_components
from llmaas.stack.triton import triton_argv
from llmaas.stack.up import StackOptions
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.instrumentation.grpc import aio_client_interceptors, aio_server_interceptor
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ALWAYS_ON, ParentBased, TraceIdRatioBased
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from typer.testing import CliRunner

SERVICE = "test.v1.Hop"


def traceparent(sampled: bool) -> tuple[int, int, str]:
    trace_id, span_id = secrets.randbits(127) + 1, secrets.randbits(63) + 1
    return trace_id, span_id, f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


# --- the traceparent parser and the sampler probe ---------------------------------------------------------------

def test_parse_traceparent():
    ctx = parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01")
    assert (ctx.trace_id, ctx.span_id) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    assert ctx.trace_flags.sampled and ctx.is_remote
    assert not parse_traceparent("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00").trace_flags.sampled
    # A later version may append fields; version 00 may not.
    assert parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra") is not None
    for bad in ("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",  # version 00 is exactly 55 chars
                "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # version ff is invalid
                "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # all-zero trace id
                "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # all-zero span id
                "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333_-01",  # int() would take the underscore
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331", ""):
        assert parse_traceparent(bad) is None, bad


@pytest.mark.parametrize("sampler, shortcut", [
    (ParentBased(TraceIdRatioBased(0.05)), True), (ParentBased(ALWAYS_ON), True), (ALWAYS_OFF, True),
    (ALWAYS_ON, False), (TraceIdRatioBased(0.05), False),  # these would record under an unsampled parent
])
def test_the_shortcut_is_taken_only_when_it_changes_nothing(sampler, shortcut):
    assert drops_unsampled_parents(TracerProvider(sampler=sampler)) is shortcut
    assert drops_unsampled_parents(trace.NoOpTracerProvider())  # records nothing at all


# --- two hops over real grpc.aio servers -------------------------------------------------------------------------

class Hops:
    """caller -> `mid` (a server that calls `leaf` through a SamplingChannel) -> `leaf`; each handler notes the
    current span context and the traceparent it received."""

    def __init__(self, provider: TracerProvider, *, reference: bool = False) -> None:
        self.provider, self.reference, self.seen = provider, reference, {}

    def _interceptor(self):
        if self.reference:  # what the services ran before: the OpenTelemetry interceptor on every call
            return aio_server_interceptor(tracer_provider=self.provider)
        return SamplingServerInterceptor(provider=self.provider)

    def _note(self, name: str, context) -> None:
        span = trace.get_current_span()
        md = dict(context.invocation_metadata())
        self.seen[name] = (span.get_span_context(), span.is_recording(), md.get("traceparent"))

    async def __aenter__(self):
        async def leaf(request, context):
            self._note("leaf", context)
            return request

        async def mid(request, context):
            self._note("mid", context)
            return await self._leaf_rpc(request, timeout=5)

        async def mid_stream(request, context):
            self._note("mid_stream", context)
            for _ in range(2):
                yield await self._leaf_rpc(request, timeout=5)

        self.servers = []
        ports = []
        for handlers in ({"Leaf": grpc.unary_unary_rpc_method_handler(leaf)},
                         {"Mid": grpc.unary_unary_rpc_method_handler(mid),
                          "MidStream": grpc.unary_stream_rpc_method_handler(mid_stream)}):
            server = grpc.aio.server(interceptors=[self._interceptor(), ErrorInterceptor()])
            server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(SERVICE, handlers)])
            ports.append(server.add_insecure_port("127.0.0.1:0"))
            await server.start()
            self.servers.append(server)
        leaf_address = f"127.0.0.1:{ports[0]}"
        if self.reference:
            self._leaf_channel = grpc.aio.insecure_channel(
                leaf_address, interceptors=aio_client_interceptors(tracer_provider=self.provider))
        else:
            self._leaf_channel = SamplingChannel(leaf_address, provider=self.provider)
        self._leaf_rpc = self._leaf_channel.unary_unary(f"/{SERVICE}/Leaf")
        self._caller = grpc.aio.insecure_channel(f"127.0.0.1:{ports[1]}")
        return self

    async def call(self, traceparent_value: str | None, stream: bool = False) -> None:
        md = (("traceparent", traceparent_value),) if traceparent_value else None
        if stream:
            responses = [r async for r in self._caller.unary_stream(f"/{SERVICE}/MidStream")(b"x", metadata=md)]
            assert responses == [b"x", b"x"]
        else:
            assert await self._caller.unary_unary(f"/{SERVICE}/Mid")(b"x", metadata=md, timeout=5) == b"x"

    async def __aexit__(self, *exc):
        await self._caller.close()
        await self._leaf_channel.close()
        for server in self.servers:
            await server.stop(None)


def _provider(sampler) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


async def test_an_unsampled_call_records_nothing_and_passes_its_context_on():
    provider, exporter = _provider(ParentBased(TraceIdRatioBased(1.0)))  # roots would all be sampled
    trace_id, span_id, header = traceparent(sampled=False)
    async with Hops(provider) as hops:
        await hops.call(header)
        await hops.call(header, stream=True)
    assert exporter.get_finished_spans() == ()
    for name in ("mid", "mid_stream"):
        ctx, recording, received = hops.seen[name]
        assert received == header and not recording
        # The caller's trace id (logs and audit records name it), a span id of this hop's own, not sampled.
        assert ctx.trace_id == trace_id and ctx.span_id not in (0, span_id) and not ctx.trace_flags.sampled
    leaf_ctx, leaf_recording, leaf_received = hops.seen["leaf"]
    passed_on = parse_traceparent(leaf_received)
    assert passed_on.trace_id == trace_id and not passed_on.trace_flags.sampled and not leaf_recording
    assert leaf_ctx.trace_id == trace_id


def _shape(spans) -> list[tuple]:
    """What a sampled trace shows, minus ids, times and the ephemeral peer port."""
    by_id = {s.context.span_id: s for s in spans}
    return sorted((s.name, s.kind.name, by_id[s.parent.span_id].name if s.parent and s.parent.span_id in by_id
                   else None, tuple(sorted((k, v) for k, v in s.attributes.items() if k != "net.peer.port")),
                   s.status.status_code.name) for s in spans)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_sampled_call_has_exactly_the_instrumentation_spans(stream):
    shapes = []
    for reference in (True, False):
        provider, exporter = _provider(ParentBased(TraceIdRatioBased(0.0)))  # only the parent's flag samples
        trace_id, span_id, header = traceparent(sampled=True)
        async with Hops(provider, reference=reference) as hops:
            await hops.call(header, stream=stream)
        spans = exporter.get_finished_spans()
        assert {s.context.trace_id for s in spans} == {trace_id}
        mid = next(s for s in spans if s.kind == trace.SpanKind.SERVER and s.name.endswith("Mid" + "Stream" * stream))
        assert mid.parent.span_id == span_id
        assert parse_traceparent(hops.seen["leaf"][2]).trace_flags.sampled
        shapes.append(_shape(spans))
    assert shapes[0] == shapes[1]
    mid_name, leaf_name = f"/{SERVICE}/Mid" + "Stream" * stream, f"/{SERVICE}/Leaf"
    calls = 2 if stream else 1
    assert sorted((name, kind, parent) for name, kind, parent, *_ in shapes[1]) == sorted(
        [(mid_name, "SERVER", None)] + [(leaf_name, "CLIENT", mid_name), (leaf_name, "SERVER", leaf_name)] * calls)


@pytest.mark.parametrize("ratio, recorded", [(1.0, True), (0.0, False)])
async def test_a_call_without_parent_is_the_samplers_to_decide(ratio, recorded):
    provider, exporter = _provider(ParentBased(TraceIdRatioBased(ratio)))
    async with Hops(provider) as hops:
        await hops.call(None)
    ctx, recording, _ = hops.seen["mid"]
    assert recording is recorded and ctx.is_valid  # a trace id either way, for the logs and the audit trail
    assert bool(exporter.get_finished_spans()) is recorded
    assert parse_traceparent(hops.seen["leaf"][2]).trace_id == ctx.trace_id


async def test_with_a_sampler_that_records_under_unsampled_parents_every_call_is_instrumented():
    provider, exporter = _provider(ALWAYS_ON)
    _, _, header = traceparent(sampled=False)
    async with Hops(provider) as hops:
        await hops.call(header)
    assert len(exporter.get_finished_spans()) == 3  # mid SERVER, its CLIENT call, leaf SERVER


def _in_span(sampled: bool):
    ctx = SpanContext(secrets.randbits(127) + 1, secrets.randbits(63) + 1, is_remote=False,
                      trace_flags=TraceFlags(1 if sampled else 0))
    return otel_context.attach(trace.set_span_in_context(NonRecordingSpan(ctx))), ctx


def test_triton_gets_a_traceparent_only_for_a_sampled_span():
    assert sampled_trace_headers() == {}  # no span at all
    for sampled in (False, True):
        token, ctx = _in_span(sampled)
        try:
            headers = sampled_trace_headers()
        finally:
            otel_context.detach(token)
        if sampled:
            assert parse_traceparent(headers["traceparent"]) == SpanContext(
                ctx.trace_id, ctx.span_id, is_remote=True, trace_flags=TraceFlags(1))
        else:
            assert headers == {}


def test_an_explicit_traceparent_in_the_metadata_is_replaced():
    token, ctx = _in_span(False)
    try:
        md = grpc_tracing._with_traceparent((("traceparent", "stale"), ("x-request-id", "r")), ctx)
    finally:
        otel_context.detach(token)
    assert md == (("x-request-id", "r"), ("traceparent", grpc_tracing.format_traceparent(ctx)))


# --- one setting, passed to every hop ------------------------------------------------------------------------------

def test_services_follow_their_caller_and_sample_their_roots_at_the_ratio(monkeypatch):
    monkeypatch.delenv("OTEL_TRACES_SAMPLER", raising=False)
    sampler = default_sampler()
    assert isinstance(sampler, ParentBased) and f"{{{DEFAULT_TRACE_SAMPLING}}}" in sampler.get_description()
    for name, value in sampler_env(0.25).items():
        monkeypatch.setenv(name, value)
    assert default_sampler() is None  # the SDK reads the standard variables itself
    assert TracerProvider().sampler.get_description() == ParentBased(TraceIdRatioBased(0.25)).get_description()


def _render(**options) -> str:
    return envoy.render_config(StackPorts(20000), internal_secret="s" * 32, **options)


def _tracing(config: str) -> dict:
    hcm = yaml.safe_load(config)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]
    return hcm["typed_config"]["tracing"]


def test_envoy_samples_the_ratio_as_a_percentage_and_honours_x_client_trace_id():
    assert _tracing(_render())["random_sampling"] == {
        "value": DEFAULT_TRACE_SAMPLING * 100}
    tracing = _tracing(_render(trace_sampling=0.0))
    assert tracing["random_sampling"] == {"value": 0.0} and tracing["client_sampling"] == {"value": 100}
    assert _tracing(_render(trace_sampling=1))["random_sampling"] == {"value": 100}
    with pytest.raises(ValueError):
        _render(trace_sampling=1.5)


def test_the_stack_passes_the_ratio_to_the_services_and_lets_triton_follow_the_traceparent(tmp_path):
    assert StackOptions(data_dir=Path("unused")).trace_sampling == DEFAULT_TRACE_SAMPLING
    components = service_components(tmp_path, StackPorts(30000), admin_token="t", internal_secret="s",
                                    catalog_files=[], otlp_endpoint="http://127.0.0.1:1", trace_sampling=0.2)
    for component in components:
        assert component.env["OTEL_TRACES_SAMPLER"] == "parentbased_traceidratio"
        assert float(component.env["OTEL_TRACES_SAMPLER_ARG"]) == 0.2
    argv = triton_argv(tmp_path, StackPorts(30000).triton(1), [tmp_path], "http://127.0.0.1:1")
    assert "--trace-config=rate=0" in argv and "--trace-config=level=TIMESTAMPS" in argv


@pytest.mark.parametrize("value", ["1.5", "-0.1", "x"])
def test_llmaas_up_refuses_a_sampling_outside_0_to_1(value, tmp_path):
    result = CliRunner().invoke(app, ["up", "--data-dir", str(tmp_path), "--trace-sampling", value])
    assert result.exit_code == 2 and "trace-sampling" in result.output
