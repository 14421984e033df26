"""Jaeger v2 (an OpenTelemetry Collector distribution) as a stack component: OTLP in, in-memory storage, query API out."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from llmaas.stack.component import Component
from llmaas.stack.ports import StackPorts

# Go module version; deploy/install-jaeger.sh builds this one as $GOPATH/bin/jaeger-<version>.
JAEGER_VERSION = "v1.76.0"
# Loopback only: the stack is local, and nothing but the stack's own ports may be bound.
HOST = "127.0.0.1"
# Bounds the in-memory store; the oldest traces are evicted past this.
MAX_TRACES = 20_000


def find_jaeger() -> Path | None:
    """The Jaeger v2 binary: $LLMAAS_JAEGER_BIN, then $GOPATH/bin/jaeger-<version>, then `jaeger` on PATH."""
    explicit = os.environ.get("LLMAAS_JAEGER_BIN")
    if explicit:
        path = Path(explicit)
        return path if path.is_file() and os.access(path, os.X_OK) else None
    for gopath in _gopaths():
        candidate = gopath / "bin" / f"jaeger-{JAEGER_VERSION}"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    on_path = shutil.which("jaeger")
    return Path(on_path) if on_path else None


def _gopaths() -> list[Path]:
    gopath = os.environ.get("GOPATH")
    if not gopath and shutil.which("go"):
        try:
            gopath = subprocess.run(
                ["go", "env", "GOPATH"], capture_output=True, text=True, timeout=10, check=True
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            gopath = None
    if not gopath:
        gopath = str(Path.home() / "go")  # Go's own default
    return [Path(p) for p in gopath.split(os.pathsep) if p]


def jaeger_config(ports: StackPorts) -> dict[str, Any]:
    """Jaeger v2 config (schema of v1.76.0's cmd/jaeger/internal/all-in-one.yaml) with every listener pinned.

    Only components that bind a socket are listed when they are needed: no jaeger/zipkin receivers,
    no remote_sampling, expvar, zpages or pprof, and healthcheckv2 without its gRPC server,
    so none of the default ports (4317, 4318, 8888, 13133, 13132, 16685, 16686, 14250, 14268,
    5778, 5779, 9411, ...) is taken.
    """

    def addr(port: int) -> str:
        return f"{HOST}:{port}"

    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {
                    "receivers": ["otlp"],
                    "processors": ["batch"],
                    "exporters": ["jaeger_storage_exporter"],
                }
            },
            "telemetry": {
                "resource": {"service.name": "jaeger"},
                "metrics": {
                    "level": "basic",
                    # Replaces the collector's default 0.0.0.0:8888 Prometheus endpoint.
                    "readers": [
                        {"pull": {"exporter": {"prometheus": {"host": HOST, "port": ports.jaeger_metrics}}}}
                    ],
                },
                "logs": {"level": "info"},
            },
        },
        "extensions": {
            "jaeger_storage": {"backends": {"memstore": {"memory": {"max_traces": MAX_TRACES}}}},
            "jaeger_query": {
                "storage": {"traces": "memstore"},
                "http": {"endpoint": addr(ports.jaeger_query_http)},
                "grpc": {"endpoint": addr(ports.jaeger_query_grpc)},
                # On by default in v2: it would export Jaeger's own spans to OTEL_EXPORTER_OTLP_ENDPOINT
                # (default localhost:4317), i.e. possibly into another stack's Jaeger.
                "enable_tracing": False,
            },
            # Only `http` is set: without a `grpc` key the v2 health check starts no gRPC server (13132).
            "healthcheckv2": {"use_v2": True, "http": {"endpoint": addr(ports.jaeger_health)}},
        },
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": addr(ports.otlp_grpc)},
                    "http": {"endpoint": addr(ports.otlp_http)},
                }
            }
        },
        # Short timeout so a test sees spans ~0.1 s after they were exported.
        "processors": {"batch": {"timeout": "100ms", "send_batch_size": 512}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "memstore"}},
    }


def health_url(ports: StackPorts) -> str:
    return f"http://{HOST}:{ports.jaeger_health}/status"


def query_url(ports: StackPorts) -> str:
    return f"http://{HOST}:{ports.jaeger_query_http}"


def is_healthy(ports: StackPorts, timeout: float = 1.0) -> bool:
    """True once healthcheckv2 reports StatusOK for the whole collector (all pipelines and extensions started)."""
    try:
        with urllib.request.urlopen(health_url(ports), timeout=timeout) as resp:
            body = json.loads(resp.read() or b"{}")
    except Exception:  # refused, 503 while starting, bad JSON: all mean "not yet"
        return False
    # 200 is also returned for recoverable/permanent component errors; only StatusOK counts as ready.
    return body.get("status") == "StatusOK"


def jaeger_component(data_dir: Path, ports: StackPorts, binary: Path) -> Component:
    config_dir = data_dir / "jaeger"
    config_path = config_dir / "config.yaml"

    def prepare() -> None:
        config_dir.mkdir(parents=True, exist_ok=True)
        config_path.write_text(yaml.safe_dump(jaeger_config(ports), sort_keys=False))

    return Component(
        name="jaeger",
        argv=[str(binary), "--config", f"file:{config_path}"],
        ready=lambda: is_healthy(ports),
        ready_timeout=30.0,
        prepare=prepare,
        cwd=config_dir,
    )
