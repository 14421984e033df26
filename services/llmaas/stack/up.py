"""`llmaas up`: the whole local stack, in stages, with a fresh API key; stack.json once everything is healthy."""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.stack.envoy import envoy_component
from llmaas.stack.jaeger import find_jaeger, jaeger_component, query_url
from llmaas.stack.paths import DEFAULT_CATALOG, DEFAULT_MODEL_REPOSITORY, GUARD_MODEL_REPOSITORY, REFERENCE_CATALOG
from llmaas.stack.ports import SERVICES, StackPorts
from llmaas.stack.services import address, auth_addresses, service_components
from llmaas.stack.supervisor import Supervisor
from llmaas.stack.triton import triton_component

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


def _write_private(path: Path, data: dict) -> None:
    # Secrets inside: readable by the owner only, from the moment the file exists.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f, indent=2)


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
    """Starts everything (raises StartError on failure; the caller stops what was started). Returns stack.json."""
    data_dir = options.data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    (data_dir / STACK_FILE).unlink(missing_ok=True)
    ports = StackPorts(options.base_port)
    state = _admin_state(data_dir)
    secret = _internal_secret(state, data_dir)

    jaeger_bin = find_jaeger() if options.jaeger else None
    otlp_grpc = otlp_http = None
    if jaeger_bin is not None:
        supervisor.start_stage([jaeger_component(data_dir, ports, jaeger_bin)])
        otlp_grpc, otlp_http = f"http://127.0.0.1:{ports.otlp_grpc}", f"http://127.0.0.1:{ports.otlp_http}"

    repositories = options.model_repositories + ([GUARD_MODEL_REPOSITORY] if options.guard_classifier == "triton" else [])
    supervisor.start_stage([
        triton_component(data_dir, ports, repositories, otlp_http),
        *service_components(data_dir, ports, admin_token=state["admin_token"], internal_secret=secret,
                            catalog_files=options.catalog_files, otlp_endpoint=otlp_grpc,
                            guard_mode=options.guard_mode, guard_classifier=options.guard_classifier,
                            auth_replicas=options.auth_replicas),
    ])
    supervisor.start_stage([envoy_component(data_dir, ports, options.auth_replicas)])

    stack = {
        "base_url": f"http://127.0.0.1:{ports.envoy_http}/v1",
        "api_key": _create_api_key(ports, data_dir, state),
        "admin_token": state["admin_token"],
        "tenant_id": state["default_tenant_id"],
        "services": {name: address(ports, name) for name in SERVICES},
        "auth_replicas": auth_addresses(ports, options.auth_replicas),
        "admin_url": f"http://127.0.0.1:{ports.envoy_http}/admin/v1",
        "triton_grpc": f"127.0.0.1:{ports.triton_grpc}",
        "envoy_admin": f"http://127.0.0.1:{ports.envoy_admin}",
        "jaeger_query": query_url(ports) if jaeger_bin is not None else None,
        "pids": {r.component.name: r.process.pid for r in supervisor.running},
    }
    _write_private(data_dir / STACK_FILE, stack)
    return stack
