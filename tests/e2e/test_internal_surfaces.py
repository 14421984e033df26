"""Nothing internal is reachable through the edge: Triton's model repository and inference APIs, and the services'
internal RPCs, are 404s over HTTP (over gRPC, UNIMPLEMENTED: tests/e2e/test_successor.py); Envoy's admin and
Triton's ports listen on loopback."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from llmaas.stack.ports import StackPorts

pytestmark = pytest.mark.e2e

INTERNAL = [
    ("POST", "/v2/repository/index"),
    ("POST", "/v2/repository/models/llmaas-test-deterministic/unload"),
    ("POST", "/v2/models/llmaas-test-deterministic/generate"),
    ("GET", "/v2/health/ready"),
    # Every internal service's methods (llmaas.common.service_auth), under their new names and their old ones.
    *(("POST", f"/llmaas.{path}") for path in (
        "catalog.v1.CatalogInternalService/ReportReplicaFailure", "catalog.v1.CatalogInternalService/ResolveModel",
        "catalog.v1.CatalogInternalService/WatchCatalog", "metering.v1.MeteringInternalService/Reserve",
        "metering.v1.MeteringInternalService/Settle", "metering.v1.MeteringInternalService/SettleBatch",
        "auth.v1.AuthInternalService/Authenticate", "auth.v1.AuthInternalService/RecordRequest",
        "auth.v1.AuthInternalService/RecordRequests", "auth.v1.AuthInternalService/CurrentIdentity",
        "guard.v1.GuardInternalService/CheckPrompt",
        "catalog.v1.CatalogService/ResolveModel", "metering.v1.MeteringService/Reserve",
        "auth.v1.AuthService/Authenticate", "guard.v1.GuardService/CheckPrompt",
        # The router's typed gRPC methods are for direct callers of the router, not the edge.
        "router.v1.RouterService/CreateChatCompletion", "router.v1.RouterService/StreamChatCompletion")),
    ("POST", "/envoy.service.auth.v3.Authorization/Check"),
    ("POST", "/ext_authz/v1/models"),  # auth's ext_authz over HTTP is its own port, never routed
    ("POST", "/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo"),
]


@pytest.mark.parametrize(("method", "path"), INTERNAL)
def test_internal_paths_are_not_routed(stack, method, path):
    origin = stack["base_url"].removesuffix("/v1")
    headers = {"Authorization": f"Bearer {stack['api_key']}"}
    r = httpx.request(method, origin + path, headers=headers, json={}, timeout=10)
    assert r.status_code == 404, (path, r.status_code, r.text[:200])
    assert r.json()["error"]["code"] == "unknown_url"


def test_admin_and_backend_ports_listen_on_loopback_only(stack):
    assert stack["envoy_admin"].startswith("http://127.0.0.1:")
    for replica in stack["triton_replicas"]:
        assert replica["grpc"].startswith("127.0.0.1:") and replica["http"].startswith("http://127.0.0.1:")
    assert all(address.startswith("127.0.0.1:") for address in stack["services"].values())


def test_auths_ext_authz_port_answers_only_the_edge(stack):
    """Auth's HTTP port for Envoy's ext_authz (llmaas.auth.ext_authz_http) signs identities: a local process that
    finds it, even with a valid key and a forged or absent credential, gets a 503 and no identity."""
    port = StackPorts(stack["base_port"]).auth_authz_http(0)
    # Listening (state 0A) on 127.0.0.1 only, never on every interface.
    listening = [line.split()[1] for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                 if line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port]
    assert listening == ["0100007F:%04X" % port]
    for credential in ({}, {"x-llmaas-service": "s1.forged.forged"}):
        r = httpx.get(f"http://127.0.0.1:{port}/ext_authz/v1/models", timeout=10,
                      headers={"Authorization": f"Bearer {stack['api_key']}", **credential})
        assert r.status_code == 503 and "x-llmaas-identity" not in r.headers
        assert r.json()["error"]["code"] == "service_unavailable"
