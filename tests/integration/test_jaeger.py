"""Real Jaeger v2 on private ports: OTLP gRPC and OTLP/HTTP JSON in, parent -> child visible through the query API."""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from llmaas.stack.jaeger import find_jaeger, jaeger_component, query_url
from llmaas.stack.ports import StackPorts
from llmaas.stack.trace_query import JaegerQuery, edges
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import ALWAYS_ON

from tests.support.ports import free_base_port
from tests.support.process import running_component

pytestmark = pytest.mark.integration

JAEGER_BIN = find_jaeger()
if JAEGER_BIN is None:
    pytest.skip(
        "Jaeger v2 binary not found (set LLMAAS_JAEGER_BIN or run deploy/install-jaeger.sh)",
        allow_module_level=True,
    )


def listening_ports(pid: int) -> set[tuple[str, int]]:
    """(address, port) of every TCP socket in LISTEN state owned by `pid` (Linux /proc)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A = LISTEN
                continue
            hex_addr, hex_port = local.split(":")
            raw = bytes.fromhex(hex_addr)
            # /proc prints the address as 32-bit words in host byte order.
            if sys.byteorder == "little":
                raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            family = socket.AF_INET if len(raw) == 4 else socket.AF_INET6
            found.add((socket.inet_ntop(family, raw), int(hex_port, 16)))
    return found


@dataclass
class RunningJaeger:
    ports: StackPorts
    proc: subprocess.Popen
    query: JaegerQuery
    startup_s: float


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningJaeger]:
    data_dir = tmp_path_factory.mktemp("stack")
    ports = StackPorts(free_base_port())
    t0 = time.monotonic()
    with running_component(jaeger_component(data_dir, ports, JAEGER_BIN), data_dir) as proc:
        yield RunningJaeger(ports, proc, JaegerQuery(query_url(ports)), time.monotonic() - t0)


def provider(service: str, ports: StackPorts) -> TracerProvider:
    # Every span sampled, whatever OTEL_TRACES_SAMPLER the environment sets (the stack's services sample).
    tp = TracerProvider(resource=Resource.create({"service.name": service}), sampler=ALWAYS_ON)
    exporter = OTLPSpanExporter(endpoint=f"127.0.0.1:{ports.otlp_grpc}", insecure=True)
    tp.add_span_processor(SimpleSpanProcessor(exporter))  # exports on span end: no flush timing to guess
    return tp


def test_parent_child_over_otlp_grpc(jaeger: RunningJaeger) -> None:
    suffix = secrets.token_hex(3)
    parent_svc, child_svc = f"test-parent-{suffix}", f"test-child-{suffix}"
    parent_tp, child_tp = provider(parent_svc, jaeger.ports), provider(child_svc, jaeger.ports)
    try:
        with parent_tp.get_tracer("test").start_as_current_span("parent-op") as parent:
            # Current context carries the parent, even across tracer providers.
            with child_tp.get_tracer("test").start_as_current_span("child-op") as child:
                pass
    finally:
        parent_tp.shutdown()
        child_tp.shutdown()

    trace_id = trace.format_trace_id(parent.get_span_context().trace_id)
    spans = jaeger.query.wait_for_services(trace_id, {parent_svc, child_svc}, timeout=15)

    by_op = {s.operation: s for s in spans}
    assert by_op["parent-op"].service == parent_svc
    assert by_op["parent-op"].parent_span_id is None
    assert by_op["child-op"].service == child_svc
    assert by_op["child-op"].span_id == trace.format_span_id(child.get_span_context().span_id)
    assert by_op["child-op"].parent_span_id == by_op["parent-op"].span_id
    assert edges(spans) == {(parent_svc, child_svc)}
    assert {parent_svc, child_svc} <= set(jaeger.query.services())
    assert trace_id in jaeger.query.find_traces(parent_svc)


def test_otlp_http_json(jaeger: RunningJaeger) -> None:
    # The shape Triton's OTLP/HTTP exporter sends; ids are hex in OTLP JSON (not base64).
    trace_id, span_id = secrets.token_hex(16), secrets.token_hex(8)
    service = f"test-http-json-{secrets.token_hex(3)}"
    now = time.time_ns()
    body = {
        "resourceSpans": [
            {
                "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
                "scopeSpans": [
                    {
                        "scope": {"name": "test"},
                        "spans": [
                            {
                                "traceId": trace_id,
                                "spanId": span_id,
                                "name": "http-json-op",
                                "kind": 2,
                                "startTimeUnixNano": str(now - 1_000_000),
                                "endTimeUnixNano": str(now),
                            }
                        ],
                    }
                ],
            }
        ]
    }
    req = urllib.request.Request(
        f"http://127.0.0.1:{jaeger.ports.otlp_http}/v1/traces",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=5) as resp:
        assert resp.status == 200

    spans = jaeger.query.wait_for_services(trace_id, {service}, timeout=15)
    assert [(s.span_id, s.operation, s.parent_span_id) for s in spans] == [(span_id, "http-json-op", None)]


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_binds_only_stack_ports_on_loopback(jaeger: RunningJaeger) -> None:
    p = jaeger.ports
    expected = {
        p.otlp_grpc,
        p.otlp_http,
        p.jaeger_query_http,
        p.jaeger_query_grpc,
        p.jaeger_health,
        p.jaeger_metrics,
    }
    bound = listening_ports(jaeger.proc.pid)
    assert {port for _, port in bound} == expected, bound
    assert {addr for addr, _ in bound} == {"127.0.0.1"}, bound
    # The metrics endpoint replaces the collector's default :8888 one.
    with urllib.request.urlopen(f"http://127.0.0.1:{p.jaeger_metrics}/metrics", timeout=5) as resp:
        assert b"otelcol_" in resp.read()
    print(f"jaeger startup {jaeger.startup_s:.2f}s")
