"""The stack's ports: Triton replicas beside the original span, the catalog's pool of replicas, stack.json's list of
them, and the refusal of a base port whose ports are taken."""

from __future__ import annotations

from pathlib import Path

import pytest
from llmaas.stack.ports import AUTH_MAX_REPLICAS, TRITON_MAX_REPLICAS, StackPorts
from llmaas.stack.services import service_components
from llmaas.stack.triton import triton_components
from llmaas.stack.up import StackOptions, port_owners, triton_replicas

BASE = 30000


def _flag(argv: list[str], name: str) -> str:
    return next(a.split("=", 1)[1] for a in argv if a.startswith(f"--{name}="))


def test_replica_one_keeps_the_original_ports():
    ports = StackPorts(BASE)
    assert ports.triton(1) == (BASE + 7, BASE + 8, BASE + 9)
    assert (ports.triton_grpc, ports.triton_http, ports.triton_metrics) == ports.triton(1)
    assert ports.triton(2) == (BASE + 20, BASE + 21, BASE + 22)
    assert ports.triton(TRITON_MAX_REPLICAS).metrics == BASE + 28


def test_every_port_of_the_largest_stack_is_distinct_and_inside_the_span():
    options = StackOptions(data_dir=Path("unused"), base_port=BASE, auth_replicas=AUTH_MAX_REPLICAS,
                           triton_replicas=TRITON_MAX_REPLICAS)
    owners = port_owners(options, jaeger=True)
    # envoy 2, services 5, extra auth 2, Triton 3 per replica, Jaeger 6, each service process's metrics, each auth
    # replica's ext_authz over HTTP: no port shared.
    assert len(owners) == (2 + 5 + (AUTH_MAX_REPLICAS - 1) + 3 * TRITON_MAX_REPLICAS + 6 + 5 + (AUTH_MAX_REPLICAS - 1)
                           + AUTH_MAX_REPLICAS)
    assert all(BASE <= port < BASE + StackPorts.SPAN for port in owners)
    assert owners[BASE + 7] == "triton grpc" and owners[BASE + 25] == "triton-3 metrics"
    assert owners[BASE + 29] == "auth ext_authz" and owners[BASE + 31] == "auth-3 ext_authz"


def test_options_choose_the_ports_checked():
    small = port_owners(StackOptions(data_dir=Path("unused"), base_port=BASE, auth_replicas=1), jaeger=False)
    assert BASE + 20 not in small and BASE + 10 not in small and BASE + 16 not in small
    assert small[BASE + 18] == "metering metrics" and small[BASE + 36] == "router metrics"
    assert BASE + 33 not in small and BASE + 30 not in small  # auth-2's metrics and ext_authz: one auth replica only
    assert small[BASE + 29] == "auth ext_authz"


@pytest.mark.parametrize("index", [0, TRITON_MAX_REPLICAS + 1])
def test_replica_numbers_outside_the_range_are_refused(index):
    with pytest.raises(ValueError):
        StackPorts(BASE).triton(index)


def test_two_triton_components_have_their_own_names_ports_and_backends(tmp_path):
    ports = StackPorts(BASE)
    first, second = triton_components(tmp_path, ports, [tmp_path / "repository"], None, replicas=2)
    assert (first.name, second.name) == ("triton", "triton-2")
    for component, index in ((first, 1), (second, 2)):
        argv = component.argv
        assert (int(_flag(argv, "grpc-port")), int(_flag(argv, "http-port")),
                int(_flag(argv, "metrics-port"))) == ports.triton(index)
        assert _flag(argv, "backend-directory") == str(tmp_path.resolve() / "triton" / component.name / "backends")
        assert _flag(argv, "model-repository") == str((tmp_path / "repository").resolve())


def test_the_catalog_learns_every_replica_and_the_rest_keeps_replica_one(tmp_path):
    ports = StackPorts(BASE)
    components = {c.name: c for c in service_components(
        tmp_path, ports, admin_token="t", internal_secret="s", catalog_files=[], otlp_endpoint=None,
        guard_classifier="triton", triton_replicas=2)}
    catalog = components["catalog"].env
    assert catalog["LLMAAS_TRITON_POOLS"] == f"local-cpu=127.0.0.1:{BASE + 7},127.0.0.1:{BASE + 20}"
    assert catalog["LLMAAS_TRITON_GRPC"] == f"127.0.0.1:{BASE + 7}"
    assert components["router"].env["LLMAAS_TRITON_GRPC"] == f"127.0.0.1:{BASE + 7}"
    assert components["guard"].env["LLMAAS_GUARD_TRITON_GRPC"] == f"127.0.0.1:{BASE + 7}"
    single = {c.name: c for c in service_components(
        tmp_path, ports, admin_token="t", internal_secret="s", catalog_files=[], otlp_endpoint=None)}
    assert single["catalog"].env["LLMAAS_TRITON_POOLS"] == f"local-cpu=127.0.0.1:{BASE + 7}"


def test_stack_file_lists_the_replicas_in_order():
    assert triton_replicas(StackPorts(BASE), 2) == [
        {"name": "triton", "grpc": f"127.0.0.1:{BASE + 7}", "http": f"http://127.0.0.1:{BASE + 8}",
         "metrics": f"http://127.0.0.1:{BASE + 9}/metrics"},
        {"name": "triton-2", "grpc": f"127.0.0.1:{BASE + 20}", "http": f"http://127.0.0.1:{BASE + 21}",
         "metrics": f"http://127.0.0.1:{BASE + 22}/metrics"},
    ]


def test_triton_in_a_container_listens_on_every_interface_on_tritons_ports(tmp_path):
    from llmaas.stack.triton_container import container_argv

    argv = container_argv(tmp_path / "backends", [tmp_path / "models"], None)
    assert (_flag(argv, "grpc-address"), _flag(argv, "http-address"), _flag(argv, "metrics-address")) == (
        "0.0.0.0", "0.0.0.0", "0.0.0.0")
    assert (int(_flag(argv, "grpc-port")), int(_flag(argv, "http-port")), int(_flag(argv, "metrics-port"))) == (
        8001, 8000, 8002)
    assert _flag(argv, "model-repository") == str((tmp_path / "models").resolve())


def test_each_auth_replica_answers_ext_authz_over_http_on_its_own_port_unless_grpc_is_asked(tmp_path):
    ports = StackPorts(BASE)

    def auth_env(**options) -> dict[str, dict[str, str]]:
        return {c.name: c.env for c in service_components(
            tmp_path, ports, admin_token="t", internal_secret="s", catalog_files=[], otlp_endpoint=None,
            auth_replicas=3, **options) if c.name.startswith("auth")}

    http = auth_env()
    assert {name: env["LLMAAS_EXT_AUTHZ_HTTP_PORT"] for name, env in http.items()} == {
        "auth": str(ports.auth_authz_http(0)), "auth-2": str(ports.auth_authz_http(1)),
        "auth-3": str(ports.auth_authz_http(2))}
    assert not any("LLMAAS_EXT_AUTHZ_HTTP_PORT" in env for env in auth_env(ext_authz="grpc").values())
    grpc_only = port_owners(StackOptions(data_dir=Path("unused"), base_port=BASE, ext_authz="grpc"), jaeger=False)
    assert BASE + 29 not in grpc_only
