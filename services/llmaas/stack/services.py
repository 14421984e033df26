"""The five llmaas services as stack components (each its own `python -m llmaas.<service>` process)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from llmaas.common.metrics import PORT_ENV as METRICS_PORT_ENV
from llmaas.common.server import REFLECTION_ENV
from llmaas.common.telemetry import DEFAULT_TRACE_SAMPLING, LOG_LEVEL_ENV, sampler_env
from llmaas.stack.component import Component
from llmaas.stack.paths import GUARD_TRITON_MODEL
from llmaas.stack.ports import SERVICES, StackPorts
from llmaas.stack.triton import TRITON_READY_TIMEOUT

HOST = "127.0.0.1"
# The pool every local Triton replica serves (the catalogue's `pool:` of the models they carry).
LOCAL_TRITON_POOL = "local-cpu"


def grpc_healthy(address: str, service: str = "") -> bool:
    try:
        with grpc.insecure_channel(address) as channel:
            response = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(service=service), timeout=1.0)
        return response.status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def address(ports: StackPorts, service: str) -> str:
    return f"{HOST}:{ports.service(service)}"


def auth_addresses(ports: StackPorts, replicas: int) -> list[str]:
    return [f"{HOST}:{ports.auth_replica(i)}" for i in range(replicas)]


def triton_pools(ports: StackPorts, triton_replicas: int) -> str:
    """LLMAAS_TRITON_POOLS: `pool=host:port,host:port` with every replica's gRPC address, in replica order."""
    addresses = ",".join(f"{HOST}:{ports.triton(i).grpc}" for i in range(1, triton_replicas + 1))
    return f"{LOCAL_TRITON_POOL}={addresses}"


def service_components(
    data_dir: Path,
    ports: StackPorts,
    *,
    admin_token: str,
    internal_secret: str,
    catalog_files: list[Path],
    otlp_endpoint: str | None,
    guard_mode: str = "enforce",
    guard_classifier: str = "local",
    auth_replicas: int = 1,
    triton_replicas: int = 1,
    trace_sampling: float = DEFAULT_TRACE_SAMPLING,
    grpc_reflection: bool = False,
    log_level: str = "info",
    ext_authz: str = "http",
) -> list[Component]:
    """`trace_sampling`: the share of requests a service traces when it is the first hop (a direct gRPC caller that
    sent no traceparent); behind Envoy every service follows the edge's decision. `grpc_reflection`: the services
    serve gRPC reflection (llmaas.common.server.REFLECTION_ENV). `ext_authz`: how Envoy asks auth; over "http", each
    auth replica also listens on its ext_authz port."""
    # LLMAAS_TRITON_GRPC is replica 1 (the guard's classifier, and the router's and catalog's default); the
    # catalog learns every replica from LLMAAS_TRITON_POOLS.
    triton = f"{HOST}:{ports.triton_grpc}"
    specific = {
        "auth": {"LLMAAS_AUTH_DATABASE_URL": f"sqlite:///{data_dir / 'auth.db'}", "LLMAAS_ADMIN_TOKEN": admin_token},
        "guard": {"LLMAAS_GUARD_MODE": guard_mode, "LLMAAS_GUARD_DATABASE_URL": f"sqlite:///{data_dir / 'guard.db'}",
                  "LLMAAS_ADMIN_TOKEN": admin_token, "LLMAAS_GUARD_CLASSIFIER": guard_classifier,
                  **({"LLMAAS_GUARD_TRITON_GRPC": triton, "LLMAAS_GUARD_TRITON_MODEL": GUARD_TRITON_MODEL}
                     if guard_classifier == "triton" else {})},
        # Every auth replica, balanced by the router's channel (gRPC's multi-address target).
        "router": {"LLMAAS_AUTH_ADDR": "ipv4:" + ",".join(auth_addresses(ports, auth_replicas)), "LLMAAS_GUARD_ADDR": address(ports, "guard"),
                   "LLMAAS_CATALOG_ADDR": address(ports, "catalog"), "LLMAAS_METERING_ADDR": address(ports, "metering"),
                   "LLMAAS_TRITON_GRPC": triton,
                   # Files and batches (llmaas.router.batch): state in router.db, files encrypted under files/ with
                   # the key in files.key (outside the database).
                   "LLMAAS_ROUTER_DATABASE_URL": f"sqlite:///{data_dir / 'router.db'}",
                   "LLMAAS_FILES_DIR": str(data_dir / "files"), "LLMAAS_FILES_KEY_FILE": str(data_dir / "files.key")},
        "metering": {"LLMAAS_METERING_DATABASE_URL": f"sqlite:///{data_dir / 'metering.db'}",
                     "LLMAAS_ADMIN_TOKEN": admin_token},
        "catalog": {"LLMAAS_CATALOG_FILES": os.pathsep.join(str(p) for p in catalog_files),
                    "LLMAAS_TRITON_GRPC": triton, "LLMAAS_TRITON_POOLS": triton_pools(ports, triton_replicas)},
    }
    telemetry = {"OTEL_EXPORTER_OTLP_ENDPOINT": otlp_endpoint, "OTEL_EXPORTER_OTLP_INSECURE": "true",
                 "OTEL_BSP_SCHEDULE_DELAY": "500"} if otlp_endpoint else {}
    telemetry |= sampler_env(trace_sampling)
    # (component name, service, port, metrics port): auth may run as several replicas sharing one database.
    instances = [(name, name, ports.service(name), ports.metrics(name)) for name in SERVICES]
    instances[1:1] = [(f"auth-{i + 1}", "auth", ports.auth_replica(i), ports.metrics("auth", i))
                      for i in range(1, auth_replicas)]
    components = []
    auth_index = 0
    for component, service, port, metrics_port in instances:
        if service == "auth" and ext_authz == "http":  # Envoy's ext_authz over HTTP (llmaas.auth.ext_authz_http)
            specific["auth"] = {**specific["auth"],
                                "LLMAAS_EXT_AUTHZ_HTTP_PORT": str(ports.auth_authz_http(auth_index))}
            auth_index += 1
        addr = f"{HOST}:{port}"
        components.append(Component(
            name=component,
            argv=[sys.executable, "-m", f"llmaas.{service}"],
            env={"LLMAAS_GRPC_PORT": str(port), METRICS_PORT_ENV: str(metrics_port), "OTEL_SERVICE_NAME": service, "PYTHONUNBUFFERED": "1", LOG_LEVEL_ENV: log_level,
                 "LLMAAS_INTERNAL_SECRET": internal_secret, **telemetry, **specific[service],
                 **({REFLECTION_ENV: "1"} if grpc_reflection else {})},
            ready=lambda addr=addr: grpc_healthy(addr),
            # The catalog is healthy once it has read Triton's model index: as long as Triton takes to load.
            ready_timeout=TRITON_READY_TIMEOUT if service == "catalog" else 30.0,
        ))
    return components
