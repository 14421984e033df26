"""`llmaas up`: the whole local stack, in stages, with a fresh API key; stack.json once everything is healthy."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.telemetry import DEFAULT_TRACE_SAMPLING
from llmaas.stack.envoy import envoy_component
from llmaas.stack.jaeger import find_jaeger, jaeger_component, query_url
from llmaas.stack.paths import DEFAULT_CATALOG, DEFAULT_MODEL_REPOSITORY, GUARD_MODEL_REPOSITORY, REFERENCE_CATALOG
from llmaas.stack.ports import SERVICES, StackPorts, port_taken
from llmaas.stack.services import HOST, address, auth_addresses, service_components
from llmaas.stack.supervisor import StartError, Supervisor, private_dir
from llmaas.stack.tls import EdgeTls, TlsError, generated_edge_tls, supplied_edge_tls
from llmaas.stack.triton import triton_components, triton_name

PROMETHEUS_TARGETS_FILE = "prometheus-targets.json"
STACK_FILE = "stack.json"
ADMIN_FILE = "admin.json"


@dataclass(frozen=True)
class StackOptions:
    data_dir: Path
    base_port: int = 8080
    model_repositories: list[Path] = field(default_factory=lambda: [DEFAULT_MODEL_REPOSITORY])
    catalog_files: list[Path] = field(default_factory=lambda: [DEFAULT_CATALOG, REFERENCE_CATALOG])
    jaeger: bool = True
    guard_mode: str = "enforce"
    # "local": the guard scores with its own copy of the model; "triton": Triton serves it (llmaas-guard).
    guard_classifier: str = "local"
    # Two by default: the stack runs as it should in production, and revocation is proven across replicas.
    auth_replicas: int = 2
    # tritonserver processes on the same model repositories (the catalog's pool `local-cpu` lists them all).
    triton_replicas: int = 1
    # Share of requests traced end to end, decided at the edge (README "Tracing"); 0 when Jaeger does not run.
    trace_sampling: float = DEFAULT_TRACE_SAMPLING
    # How Envoy asks auth for every request's verdict: "http" (a fifth of gRPC's cost: llmaas.auth.ext_authz_http)
    # or "grpc" (envoy.service.auth.v3.Authorization).
    ext_authz: str = "http"
    # gRPC reflection on the services' ports: off unless asked for (`--grpc-reflection`).
    grpc_reflection: bool = False
    # The edge serves HTTPS (TLS 1.3) with the data directory's generated certificate, or with these files (the
    # chain, its key, and what clients should trust: None when a CA the system trusts issued it).
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None
    tls_ca_file: Path | None = None
    # Plain HTTP at the edge: only when asked for by name (`llmaas up --insecure-http`).
    insecure_http: bool = False
    # The services' log level (LLMAAS_LOG_LEVEL): debug, info, warning, error.
    log_level: str = "info"


class TlsSetupError(StartError):
    """The operator's certificate or key cannot serve."""


def edge_tls(options: StackOptions, data_dir: Path) -> EdgeTls | None:
    """What the edge serves: None for plain HTTP, the operator's files, or the data directory's certificate."""
    if options.insecure_http:
        return None
    if options.tls_cert_file is None and options.tls_key_file is None:
        return generated_edge_tls(data_dir)
    if options.tls_cert_file is None or options.tls_key_file is None:
        raise TlsSetupError("--tls-cert and --tls-key go together")
    try:
        return supplied_edge_tls(options.tls_cert_file, options.tls_key_file, options.tls_ca_file)
    except TlsError as e:
        raise TlsSetupError(str(e)) from None


class PortTaken(StartError):
    """A port the stack needs is already taken (another stack on the same base port, or another program)."""


def port_owners(options: StackOptions, jaeger: bool) -> dict[int, str]:
    """Every port the stack listens on with these options, and which component listens there."""
    ports = StackPorts(options.base_port)
    owners = {ports.envoy_http: "envoy", ports.envoy_admin: "envoy admin"}
    owners |= {ports.service(name): name for name in SERVICES}
    owners |= {ports.auth_replica(i): f"auth-{i + 1}" for i in range(1, options.auth_replicas)}
    if options.ext_authz == "http":
        owners |= {ports.auth_authz_http(i): f"auth{'' if i == 0 else f'-{i + 1}'} ext_authz"
                   for i in range(options.auth_replicas)}
    for index in range(1, options.triton_replicas + 1):
        owners |= {port: f"{triton_name(index)} {kind}" for kind, port in ports.triton(index)._asdict().items()}
    if jaeger:
        owners |= {ports.otlp_grpc: "jaeger otlp-grpc", ports.otlp_http: "jaeger otlp-http",
                   ports.jaeger_query_http: "jaeger query-http", ports.jaeger_query_grpc: "jaeger query-grpc",
                   ports.jaeger_health: "jaeger health", ports.jaeger_metrics: "jaeger metrics"}
    owners |= {port: f"{name} metrics" for name, port in metrics_ports(ports, options.auth_replicas).items()}
    return owners


def metrics_ports(ports: StackPorts, auth_replicas: int) -> dict[str, int]:
    """Each service process's Prometheus port, by component name (auth's replicas are auth-2, auth-3)."""
    found = {name: ports.metrics(name) for name in SERVICES}
    found |= {f"auth-{i + 1}": ports.metrics("auth", i) for i in range(1, auth_replicas)}
    return found


def scrape_targets(ports: StackPorts, auth_replicas: int, triton_replicas_: int) -> dict[str, str]:
    """stack.json's `metrics`: every Prometheus endpoint of the stack, by component (the services, Envoy's stats,
    each Triton replica's)."""
    targets = {name: f"http://{HOST}:{port}/metrics" for name, port in metrics_ports(ports, auth_replicas).items()}
    targets["envoy"] = f"http://{HOST}:{ports.envoy_admin}/stats/prometheus"
    targets |= {triton_name(i): f"http://{HOST}:{ports.triton(i).metrics}/metrics"
                for i in range(1, triton_replicas_ + 1)}
    return targets


def refuse_taken_ports(options: StackOptions, jaeger: bool | None = None) -> None:
    """Raises PortTaken (a one-line message) when a port the stack would listen on is taken. Without this check a
    second stack on the same base port would health-check the first one's processes and believe itself up.
    jaeger: whether Jaeger runs (by default: when it is wanted and installed)."""
    if jaeger is None:
        jaeger = _jaeger_binary(options) is not None
    owners = port_owners(options, jaeger)
    taken = sorted(port for port in owners if port_taken(port))
    if taken:
        first = taken[0]
        more = f" (and {len(taken) - 1} more of the stack's ports)" if len(taken) > 1 else ""
        raise PortTaken(f"port {first} ({owners[first]}) is already in use{more}: another stack or program "
                        f"listens there; choose another --base-port (this stack needs {min(owners)}-{max(owners)})")


def _jaeger_binary(options: StackOptions) -> Path | None:
    return find_jaeger() if options.jaeger else None


def _write_private(path: Path, data: dict | list) -> None:
    """Replaces the file atomically (a reader sees the old content or the new, never half of it)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.unlink(missing_ok=True)
    # Secrets inside: readable by the owner only, from the moment the file exists.
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def _admin_state(data_dir: Path) -> dict:
    """The admin token and default tenant of this data directory, made on first use and kept."""
    path = data_dir / ADMIN_FILE
    if path.exists():
        return json.loads(path.read_text())
    state = {"admin_token": "llmaas-admin-" + secrets.token_urlsafe(32), "default_tenant_id": ""}
    _write_private(path, state)
    return state


def _internal_secret(state: dict, data_dir: Path) -> str:
    """Signs identity headers between services and seals rotated secrets: made once per data directory."""
    if not state.get("internal_secret"):
        state["internal_secret"] = secrets.token_urlsafe(48)
        _write_private(data_dir / ADMIN_FILE, state)
    return state["internal_secret"]


def _create_api_key(ports: StackPorts, data_dir: Path, state: dict) -> str:
    md = (("authorization", f"Bearer {state['admin_token']}"),)
    with grpc.insecure_channel(address(ports, "auth")) as channel:
        stub = auth_pb2_grpc.AuthServiceStub(channel)
        if not state["default_tenant_id"]:
            state["default_tenant_id"] = stub.CreateTenant(
                auth_pb2.CreateTenantRequest(name="default"), metadata=md, timeout=10).tenant.tenant_id
            _write_private(data_dir / ADMIN_FILE, state)
        key = stub.CreateApiKey(auth_pb2.CreateApiKeyRequest(tenant_id=state["default_tenant_id"], name="llmaas-up"),
                                metadata=md, timeout=10)
    return key.api_key


def start_stack(options: StackOptions, supervisor: Supervisor) -> dict:
    """Starts everything (raises StartError on failure; the caller stops what was started). Returns stack.json.
    Refuses (PortTaken) before touching the data directory when a port is taken: it may be that stack's."""
    jaeger_bin = _jaeger_binary(options)
    refuse_taken_ports(options, jaeger=jaeger_bin is not None)
    data_dir = options.data_dir.resolve()
    # Databases, logs, secrets and configs: readable by the owner only. The children inherit the umask, so what they
    # create under the data directory (SQLite files and their WAL, Triton's and Jaeger's files) is 0600 / 0700.
    os.umask(0o077)
    private_dir(data_dir)
    (data_dir / STACK_FILE).unlink(missing_ok=True)
    ports = StackPorts(options.base_port)
    state = _admin_state(data_dir)
    secret = _internal_secret(state, data_dir)
    tls = edge_tls(options, data_dir)

    otlp_grpc = otlp_http = None
    # Without a collector a sampled span would be built for nobody: nothing is sampled then (but a request forced
    # with x-client-trace-id, which is rare).
    trace_sampling = options.trace_sampling if jaeger_bin is not None else 0.0
    if jaeger_bin is not None:
        supervisor.start_stage([jaeger_component(data_dir, ports, jaeger_bin)])
        otlp_grpc, otlp_http = f"http://127.0.0.1:{ports.otlp_grpc}", f"http://127.0.0.1:{ports.otlp_http}"

    repositories = options.model_repositories + ([GUARD_MODEL_REPOSITORY] if options.guard_classifier == "triton" else [])
    supervisor.start_stage([
        *triton_components(data_dir, ports, repositories, otlp_http, options.triton_replicas),
        *service_components(data_dir, ports, admin_token=state["admin_token"], internal_secret=secret,
                            catalog_files=options.catalog_files, otlp_endpoint=otlp_grpc,
                            guard_mode=options.guard_mode, guard_classifier=options.guard_classifier,
                            auth_replicas=options.auth_replicas, triton_replicas=options.triton_replicas,
                            trace_sampling=trace_sampling, grpc_reflection=options.grpc_reflection,
                            log_level=options.log_level, ext_authz=options.ext_authz),
    ])
    supervisor.start_stage([envoy_component(data_dir, ports, options.auth_replicas, trace_sampling, tls,
                                            internal_secret=secret, authz_transport=options.ext_authz)])

    edge = f"{'http' if tls is None else 'https'}://127.0.0.1:{ports.envoy_http}"
    stack = {
        "base_url": f"{edge}/v1",
        "api_key": _create_api_key(ports, data_dir, state),
        "admin_token": state["admin_token"],
        "tenant_id": state["default_tenant_id"],
        "services": {name: address(ports, name) for name in SERVICES},
        "auth_replicas": auth_addresses(ports, options.auth_replicas),
        "admin_url": f"{edge}/admin/v1",
        # The CA that issued the edge's certificate (clients verify with it); None: plain HTTP, or the system's CAs.
        "ca_file": str(tls.ca_file) if tls is not None and tls.ca_file is not None else None,
        "edge_tls": None if tls is None else {"cert_file": str(tls.cert_file), "key_file": str(tls.key_file),
                                              "origin": tls.origin},
        "triton_grpc": f"{HOST}:{ports.triton_grpc}",
        "triton_replicas": triton_replicas(ports, options.triton_replicas),
        "envoy_admin": f"http://127.0.0.1:{ports.envoy_admin}",
        "metrics": scrape_targets(ports, options.auth_replicas, options.triton_replicas),
        "jaeger_query": query_url(ports) if jaeger_bin is not None else None,
        "trace_sampling": trace_sampling,
        "pids": supervisor.pids(),
    }
    _write_private(data_dir / STACK_FILE, stack)
    _write_private(data_dir / PROMETHEUS_TARGETS_FILE, prometheus_targets(stack["metrics"]))
    return stack


def prometheus_targets(metrics: dict[str, str]) -> list[dict]:
    """Prometheus file_sd targets of the stack (deploy/observability/prometheus/prometheus.yaml reads them): jobs
    llmaas-<service> (auth's replicas together), envoy and triton, as the alert rules and dashboards expect."""
    groups: dict[str, dict] = {}
    for component, url in metrics.items():
        host_port, _, path = url.removeprefix("http://").partition("/")
        job = ("triton" if component.startswith("triton") else "envoy" if component == "envoy"
               else "llmaas-" + component.split("-")[0])
        group = groups.setdefault(job + path, {"targets": [], "labels": {"job": job, "__metrics_path__": "/" + path}})
        group["targets"].append(host_port)
    return list(groups.values())


def triton_replicas(ports: StackPorts, replicas: int) -> list[dict[str, str]]:
    """stack.json's `triton_replicas`: each replica's name and addresses, in replica order."""
    listed = []
    for index in range(1, replicas + 1):
        p = ports.triton(index)
        listed.append({"name": triton_name(index), "grpc": f"{HOST}:{p.grpc}", "http": f"http://{HOST}:{p.http}",
                       "metrics": f"http://{HOST}:{p.metrics}/metrics"})
    return listed


def update_stack_pids(data_dir: Path, pids: dict[str, int]) -> None:
    """Keeps stack.json true after the supervisor restarted a child: its `pids` become `pids`."""
    path = data_dir.resolve() / STACK_FILE
    try:
        stack = json.loads(path.read_text())
    except FileNotFoundError:  # not written yet (a restart only happens once the stack is up) or already removed
        return
    stack["pids"] = pids
    _write_private(path, stack)
