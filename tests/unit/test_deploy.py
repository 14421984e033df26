"""What deploy/ holds for operators, checked with the real tools: the Grafana dashboards are what
llmaas.observability.dashboards makes; the Prometheus rules pass `promtool check rules` and their unit tests
(`promtool test rules`); the Helm chart passes `helm lint`, and `helm template` renders manifests the Kubernetes
schemas accept (kubernetes-validate, offline); the compose file passes `docker compose config`.

The Go tools come from deploy/install-ops-tools.sh (CI installs them); without them these tests skip locally and fail
in CI. Nothing is built or run in a container: there is no Docker engine here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from llmaas.observability.dashboards import DASHBOARDS, OUT, queries, render
from llmaas.stack.envoy import AUTHZ_HTTP_PORT
from llmaas.stack.paths import DEPLOY_DIR, REPO_ROOT

RULES = DEPLOY_DIR / "observability" / "prometheus"
CHART = DEPLOY_DIR / "helm" / "llmaas"
COMPOSE = DEPLOY_DIR / "docker" / "compose.yaml"
INSTALLER = DEPLOY_DIR / "install-ops-tools.sh"
CHART_VALUES = ["--set", "secrets.adminToken=admin-token-for-tests",
                "--set", "secrets.internalSecret=" + "x" * 40,
                "--set", "postgresql.urls.auth=postgresql://llmaas:pw@db:5432/auth",
                "--set", "postgresql.urls.guard=postgresql://llmaas:pw@db:5432/guard",
                "--set", "postgresql.urls.metering=postgresql://llmaas:pw@db:5432/metering",
                "--set", "redis.url=redis://redis:6379/0", "--set", "otlp.endpoint=http://otel-collector:4317"]


def _tool(name: str, variable: str) -> str:
    version = re.search(rf"^{variable}=(\S+)$", INSTALLER.read_text(), re.M).group(1)
    gopath = subprocess.run(["go", "env", "GOPATH"], capture_output=True, text=True).stdout.strip().split(":")[0] \
        if shutil.which("go") else ""
    path = Path(gopath) / "bin" / f"{name}-{version}"
    if not path.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing: .ci/run installs it with {INSTALLER.name}")
        pytest.skip(f"{name} {version} not installed (bash deploy/install-ops-tools.sh)")
    return str(path)


def _run(*argv: str, **kw) -> subprocess.CompletedProcess:
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, **kw)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_dashboards_are_generated_and_query_only_prometheus():
    for name, text in render().items():
        assert (OUT / name).read_text() == text, f"{name} is stale: run python -m llmaas.observability.dashboards"
        dashboard = json.loads(text)
        assert dashboard["uid"].startswith("llmaas-") and dashboard["panels"]
        assert all(t["datasource"]["uid"] == "${datasource}" for p in dashboard["panels"] for t in p["targets"])
    assert set(DASHBOARDS) == {"traffic-latency", "errors", "guard", "budgets-spend", "backends"}
    every = [q for build in DASHBOARDS.values() for q in queries(build())]
    assert not any(re.search(r"\btenant\b|key_id", q) for q in every)  # nothing per tenant on shared dashboards


def test_promtool_checks_and_unit_tests_the_rules():
    promtool = _tool("promtool", "PROMTOOL_VERSION")
    out = _run(promtool, "check", "rules", str(RULES / "alerts.yaml")).stdout
    assert "SUCCESS" in out
    _run(promtool, "test", "rules", str(RULES / "alerts_test.yaml"))
    _run(promtool, "check", "config", "--syntax-only", str(RULES / "prometheus.yaml"))


def test_helm_chart_lints_renders_and_validates(tmp_path):
    helm = _tool("helm", "HELM_VERSION")
    env = {**os.environ, "HELM_CACHE_HOME": str(tmp_path / "cache"), "HELM_CONFIG_HOME": str(tmp_path / "config"),
           "HELM_DATA_HOME": str(tmp_path / "data")}
    _run(helm, "lint", "--strict", str(CHART), *CHART_VALUES, env=env)
    for extra in ([], ["--set", "triton.gpus=1", "--set", "triton.image=nvcr.io/nvidia/tritonserver:25.10-vllm-python-py3",
                       "--set", "triton.modelRepository.claimName=models", "--set", "envoy.tlsSecret=edge-tls",
                       "--set", "postgresql.urls.router=postgresql://llmaas:pw@db:5432/router",
                       "--set", "files.claimName=llmaas-files", "--set", "files.keySecret=llmaas-files-key"]):
        rendered = _run(helm, "template", "llmaas", str(CHART), "--namespace", "llmaas", *CHART_VALUES, *extra,
                        env=env).stdout
        manifests = tmp_path / "manifests.yaml"
        manifests.write_text(rendered)
        validated = _run(shutil.which("kubernetes-validate") or str(Path(sys.executable).parent / "kubernetes-validate"),
                         "--strict", "-k", "1.33.0", str(manifests)).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d]
        assert validated.count(" passed for resource ") == len(docs), validated  # every manifest, none skipped
        kinds = {(d["kind"], d["metadata"]["name"]) for d in docs}
        for service in ("auth", "guard", "router", "metering", "catalog"):
            assert {("Deployment", f"llmaas-{service}"), ("Service", f"llmaas-{service}"),
                    ("PodDisruptionBudget", f"llmaas-{service}")} <= kinds
        assert ("StatefulSet", "llmaas-triton") in kinds and ("Deployment", "llmaas-envoy") in kinds
        assert ("CronJob", "llmaas-audit-verify") in kinds
        triton = next(d for d in docs if d["kind"] == "StatefulSet")
        limits = triton["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]
        assert ("nvidia.com/gpu" in limits) == bool(extra)
        catalog = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmaas-catalog")
        catalog_env = {e["name"]: e.get("value")
                       for e in catalog["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert catalog_env["LLMAAS_TRITON_POOLS"] == ("local-cpu=llmaas-triton-0.llmaas-triton:8001,"
                                              "llmaas-triton-1.llmaas-triton:8001")
        # Auth answers Envoy's ext_authz over HTTP on the port the edge's config names (llmaas.stack.envoy).
        auth = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmaas-auth")
        [auth_container] = auth["spec"]["template"]["spec"]["containers"]
        assert {"name": "authz", "containerPort": AUTHZ_HTTP_PORT} in auth_container["ports"]
        assert {"name": "LLMAAS_EXT_AUTHZ_HTTP_PORT", "value": str(AUTHZ_HTTP_PORT)} in auth_container["env"]
        auth_service = next(d for d in docs if d["kind"] == "Service" and d["metadata"]["name"] == "llmaas-auth")
        assert {"name": "authz", "port": AUTHZ_HTTP_PORT, "targetPort": "authz"} in auth_service["spec"]["ports"]
        router = next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "llmaas-router")
        probe = router["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]
        assert probe["grpc"] == {"port": 50051}
        # Files and batches only with a shared volume and a key: every router pod mounts the same ones.
        router_env = {e["name"] for e in router["spec"]["template"]["spec"]["containers"][0]["env"]}
        volumes = {v["name"]: v for v in router["spec"]["template"]["spec"].get("volumes", [])}
        assert ("LLMAAS_ROUTER_DATABASE_URL" in router_env) == bool(extra) == ("files" in volumes)
        if extra:
            assert volumes["files"]["persistentVolumeClaim"] == {"claimName": "llmaas-files"}
            assert volumes["files-key"]["secret"]["secretName"] == "llmaas-files-key"
    # Without its secrets the chart refuses to render.
    missing = subprocess.run([helm, "template", "llmaas", str(CHART)], capture_output=True, text=True, env=env)
    assert missing.returncode != 0 and "secrets" in missing.stderr


def test_compose_file_is_valid(tmp_path):
    compose = _tool("docker-compose", "COMPOSE_VERSION")
    env = {**os.environ, "LLMAAS_ADMIN_TOKEN": "t", "LLMAAS_INTERNAL_SECRET": "x" * 40, "POSTGRES_PASSWORD": "pw",
           "DOCKER_CONFIG": str(tmp_path)}
    out = _run(compose, "-f", str(COMPOSE), "config", "--format", "json", env=env, cwd=REPO_ROOT).stdout
    config = json.loads(out)
    assert {"auth", "guard", "router", "metering", "catalog", "envoy", "triton", "postgres", "redis"} <= set(
        config["services"])
    assert config["services"]["guard"]["environment"]["LLMAAS_GUARD_REDIS_URL"] == "redis://redis:6379/0"
    router = config["services"]["router"]
    assert router["environment"]["LLMAAS_ROUTER_DATABASE_URL"].endswith("@postgres:5432/llmaas_router")
    assert {v["target"] for v in router["volumes"]} == {"/var/lib/llmaas/files", "/var/lib/llmaas/files-key"}
