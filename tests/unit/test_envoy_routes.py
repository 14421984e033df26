"""The edge's routes come from the descriptor (llmaas.stack.envoy.transcoded_routes): every public REST operation has
exactly one route, to its package's service, and no internal service is routed or transcoded."""

from __future__ import annotations

import yaml
from llmaas.common.service_auth import INTERNAL_CALLERS
from llmaas.stack import envoy
from llmaas.stack.ports import StackPorts


def _hcm(config: str) -> dict:
    return yaml.safe_load(config)["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def test_one_route_per_annotated_method_to_its_packages_cluster():
    routes, services = envoy.transcoded_routes()
    paths = {r.path: r.cluster for r in routes}
    assert len(paths) == len(routes)
    assert paths["/llmaas.router.v1.RouterService/ChatCompletionsHttp"] == "router"
    assert paths["/llmaas.catalog.v1.CatalogService/ListModels"] == "catalog"
    assert paths["/llmaas.auth.v1.AuthService/CreateApiKey"] == "auth"
    assert paths["/llmaas.guard.v1.GuardService/SetTenantPolicy"] == "guard"
    assert paths["/llmaas.metering.v1.MeteringService/GetUsage"] == "metering"
    assert all(path.split("/")[1].split(".")[1] == cluster for path, cluster in paths.items())
    # Typed gRPC methods (no REST annotation) and every internal service: no route.
    assert "/llmaas.router.v1.RouterService/CreateChatCompletion" not in paths
    assert not set(services) & set(INTERNAL_CALLERS)
    assert not [p for p in paths if p.split("/")[1] in INTERNAL_CALLERS]


def test_the_rendered_config_routes_and_transcodes_exactly_those():
    hcm = _hcm(envoy.render_config(StackPorts(20000), internal_secret="s" * 32))
    routes, services = envoy.transcoded_routes()
    exact = {r["match"]["path"]: r["route"]["cluster"] for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
             if "path" in r["match"] and r["match"]["path"].startswith("/llmaas.")}
    assert exact == {r.path: r.cluster for r in routes}
    [transcoder] = [f for f in hcm["http_filters"] if f["name"] == "envoy.filters.http.grpc_json_transcoder"]
    assert transcoder["typed_config"]["services"] == services
    # What only Envoy may set for auth or ask of it: never passed on from a client.
    assert hcm["route_config"]["virtual_hosts"][0]["request_headers_to_remove"] == [
        "x-llmaas-service", "x-llmaas-downstream-address", "x-envoy-auth-headers-to-remove"]
    # The public routes ask no key, and pass none on.
    public = [r for r in hcm["route_config"]["virtual_hosts"][0]["routes"]
              if r["match"].get("path") in ("/v1/status", "/v1/lifecycle")]
    assert len(public) == 2 and all(r["request_headers_to_remove"] == ["authorization"] for r in public)


def _authz(config: dict) -> dict:
    [authz] = [f for f in _hcm_of(config)["http_filters"] if f["name"] == "envoy.filters.http.ext_authz"]
    return authz["typed_config"]


def _hcm_of(config: dict) -> dict:
    return config["static_resources"]["listeners"][0]["filter_chains"][0]["filters"][0]["typed_config"]


def _endpoints(cluster: dict) -> list[tuple[str, int]]:
    return [(e["endpoint"]["address"]["socket_address"]["address"], e["endpoint"]["address"]["socket_address"][
        "port_value"]) for e in cluster["load_assignment"]["endpoints"][0]["lb_endpoints"]]


def test_ext_authz_over_http_by_default_to_every_auth_replica():
    """The edge asks auth over HTTP (llmaas.auth.ext_authz_http): every replica's HTTP port, health-checked; the
    credential and the peer address Envoy saw are added by Envoy (overwriting the client's), only the identity
    headers come back to the request, and nothing but the key and the request id is copied from the client."""
    from llmaas.auth import ext_authz_http

    ports = StackPorts(20000)
    config = yaml.safe_load(envoy.render_config(ports, auth_replicas=3, internal_secret="s" * 32))
    authz = _authz(config)
    service = authz["http_service"]
    assert "grpc_service" not in authz and service["server_uri"]["cluster"] == "auth_authz"
    assert service["path_prefix"] == ext_authz_http.PATH_PREFIX
    added = {h["key"]: h["value"] for h in service["authorization_request"]["headers_to_add"]}
    assert added["x-llmaas-service"].startswith("s1.")
    assert added[ext_authz_http.PEER_HEADER] == "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%"
    assert {p["exact"] for p in authz["allowed_headers"]["patterns"]} == {"authorization", "x-request-id"}
    assert {p["exact"] for p in service["authorization_response"]["allowed_upstream_headers"]["patterns"]} == {
        "x-llmaas-identity", "x-llmaas-client-address"}
    assert authz["failure_mode_allow"] is False
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert _endpoints(clusters["auth_authz"]) == [("127.0.0.1", ports.auth_authz_http(i)) for i in range(3)]
    assert clusters["auth_authz"]["health_checks"][0]["http_health_check"]["path"] == ext_authz_http.HEALTH_PATH
    options = clusters["auth_authz"]["typed_extension_protocol_options"][
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"]
    assert "http_protocol_options" in options["explicit_http_config"]  # HTTP/1.1
    # Envoy closes idle connections before auth's server does: a check never lands on one being closed.
    assert int(options["common_http_protocol_options"]["idle_timeout"].rstrip("s")) < ext_authz_http.KEEPALIVE_SECONDS


def test_ext_authz_over_grpc_when_asked():
    config = yaml.safe_load(envoy.render_config(StackPorts(20000), internal_secret="s" * 32, authz_transport="grpc"))
    authz = _authz(config)
    [credential] = authz["grpc_service"]["initial_metadata"]
    assert credential["key"] == "x-llmaas-service" and credential["value"].startswith("s1.")
    assert "http_service" not in authz
    assert "auth_authz" not in {c["name"] for c in config["static_resources"]["clusters"]}


def test_kubernetes_config_names_services_by_dns_and_serves_stats():
    import yaml
    from llmaas.stack.envoy import render_kubernetes_config

    services = {name: f"llmaas-{name}.llmaas.svc.cluster.local:50051"
                for name in ("auth", "router", "catalog", "guard", "metering")}
    config = yaml.safe_load(render_kubernetes_config(services, "otel-collector.observability:4317", "s" * 32))
    clusters = {c["name"]: c for c in config["static_resources"]["clusters"]}
    assert clusters["router"]["type"] == "STRICT_DNS"
    endpoint = clusters["router"]["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]
    assert endpoint["address"]["socket_address"] == {"address": "llmaas-router.llmaas.svc.cluster.local",
                                                     "port_value": 50051}
    assert clusters["envoy_admin"]["type"] == "STATIC"
    listeners = {listener["name"]: listener for listener in config["static_resources"]["listeners"]}
    assert listeners["openai_api"]["address"]["socket_address"]["address"] == "0.0.0.0"
    assert listeners["metrics"]["address"]["socket_address"]["port_value"] == 9902
    assert config["admin"]["address"]["socket_address"]["address"] == "127.0.0.1"  # the admin API stays private
    routes = listeners["openai_api"]["filter_chains"][0]["filters"][0]["typed_config"]["route_config"]
    status = next(r for r in routes["virtual_hosts"][0]["routes"] if r["match"].get("path") == "/v1/status")
    assert status["typed_per_filter_config"]["envoy.filters.http.ext_authz"]["disabled"] is True
    # ext_authz over HTTP on every auth pod (the headless Service's name), on the port the chart gives auth.
    assert _endpoints(clusters["auth_authz"]) == [("llmaas-auth.llmaas.svc.cluster.local", envoy.AUTHZ_HTTP_PORT)]


def test_the_kubernetes_config_command_writes_what_envoy_accepts(tmp_path, monkeypatch):
    """`python -m llmaas.stack.envoy --out` (the chart's init container), then Envoy's own validation of the file."""
    import subprocess

    from llmaas.stack.envoy import find_envoy, main

    monkeypatch.setenv("LLMAAS_INTERNAL_SECRET", "s" * 40)
    for name in ("auth", "router", "catalog", "guard", "metering"):
        monkeypatch.setenv(f"LLMAAS_{name.upper()}_ADDR", f"llmaas-{name}.llmaas.svc.cluster.local:50051")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel-collector.observability:4317")
    out = tmp_path / "envoy.yaml"
    main(["--out", str(out)])
    assert "otel-collector.observability" in out.read_text()
    result = subprocess.run([str(find_envoy()), "--mode", "validate", "-c", str(out)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0 and "OK" in result.stdout + result.stderr, result.stderr[-2000:]
