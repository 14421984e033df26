"""The Grafana dashboards, as code: one per concern (traffic and latency per model, errors, guard, budgets and spend,
backends), written to deploy/observability/grafana/*.json. The JSON is generated, never edited by hand:

    .venv/bin/python -m llmaas.observability.dashboards          # rewrite the JSON files
    .venv/bin/python -m llmaas.observability.dashboards --check  # fail if they differ from this file (CI)

Every query reads a metric the stack exports (llmaas.common.metrics and the services' metrics modules, Envoy's
/stats/prometheus, Triton's /metrics); tests/e2e/test_observability.py checks each exists in a real scrape.
Datasource: a variable (`datasource`, any Prometheus), so the files import into any Grafana.
"""

from __future__ import annotations

import argparse
import json
import sys

from llmaas.stack.paths import DEPLOY_DIR

OUT = DEPLOY_DIR / "observability" / "grafana"
DS = {"type": "prometheus", "uid": "${datasource}"}


def _panel(title: str, targets: list[tuple[str, str]], *, unit: str = "short", kind: str = "timeseries",
           description: str = "") -> dict:
    return {"type": kind, "title": title, "description": description, "datasource": DS,
            "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
            "options": {"legend": {"displayMode": "table", "placement": "bottom", "calcs": ["mean", "max"]}}
            if kind == "timeseries" else {},
            "targets": [{"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
                        for i, (expr, legend) in enumerate(targets)]}


def _dashboard(uid: str, title: str, panels: list[dict], *, model_variable: bool = True) -> dict:
    for i, panel in enumerate(panels):
        panel["id"] = i + 1
        panel["gridPos"] = {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)}
    variables = [{"name": "datasource", "type": "datasource", "query": "prometheus", "label": "Prometheus"}]
    if model_variable:
        variables.append({"name": "model", "type": "query", "datasource": DS, "label": "model",
                          "query": {"query": "label_values(llmaas_router_requests_total, model)", "refId": "model"},
                          "includeAll": True, "multi": True, "allValue": ".*", "refresh": 2})
    return {"uid": uid, "title": title, "tags": ["llmaas"], "timezone": "utc", "schemaVersion": 39,
            "editable": True, "refresh": "30s", "time": {"from": "now-3h", "to": "now"},
            "templating": {"list": variables}, "panels": panels}


M = 'model=~"$model"'


def traffic() -> dict:
    return _dashboard("llmaas-traffic", "llmaas / traffic and latency per model", [
        _panel("Requests per second by model", [(f"sum by (model) (rate(llmaas_router_requests_total{{{M}}}[5m]))",
                                                 "{{model}}")], unit="reqps"),
        _panel("Requests per second by endpoint", [("sum by (endpoint) (rate(llmaas_router_requests_total[5m]))",
                                                    "{{endpoint}}")], unit="reqps"),
        _panel("Request latency p50 / p95 by model", [
            (f"histogram_quantile(0.5, sum by (model, le) (rate(llmaas_router_request_seconds_bucket{{{M}}}[5m])))",
             "p50 {{model}}"),
            (f"histogram_quantile(0.95, sum by (model, le) (rate(llmaas_router_request_seconds_bucket{{{M}}}[5m])))",
             "p95 {{model}}")], unit="s"),
        _panel("Where a chat request's time goes at the router (mean)", [
            (f"sum by (stage) (rate(llmaas_router_stage_seconds_sum{{{M}}}[5m])) / "
             f"sum by (stage) (rate(llmaas_router_stage_seconds_count{{{M}}}[5m]))", "{{stage}}"),
            (f'sum(rate(llmaas_router_request_seconds_sum{{endpoint="POST /v1/chat/completions",{M}}}[5m])) / '
             f'sum(rate(llmaas_router_request_seconds_count{{endpoint="POST /v1/chat/completions",{M}}}[5m]))',
             "whole request")], unit="s",
            description="checks: the guard's verdict and metering's grant, asked at once before dispatch; backend: "
                        "from dispatch to the model's last response. The whole request's time less both is the "
                        "router's own (means add up, quantiles do not)."),
        _panel("Time to first token p50 / p95 by model", [
            ("histogram_quantile(0.5, sum by (model, le) "
             f"(rate(llmaas_router_time_to_first_token_seconds_bucket{{{M}}}[5m])))", "p50 {{model}}"),
            ("histogram_quantile(0.95, sum by (model, le) "
             f"(rate(llmaas_router_time_to_first_token_seconds_bucket{{{M}}}[5m])))", "p95 {{model}}")], unit="s"),
        _panel("Output tokens per second per request (p50) by model", [
            ("histogram_quantile(0.5, sum by (model, le) "
             f"(rate(llmaas_router_output_tokens_per_second_bucket{{{M}}}[5m])))", "{{model}}")]),
        _panel("Output tokens per second, whole platform, by model", [
            (f"sum by (model) (rate(llmaas_router_output_tokens_total{{{M}}}[5m]))", "{{model}}")]),
        _panel("Streams cancelled by clients per second", [
            (f"sum by (model) (rate(llmaas_router_client_cancelled_streams_total{{{M}}}[5m]))", "{{model}}")],
            unit="reqps"),
        _panel("Edge requests per second by status class (Envoy)", [
            ('sum by (envoy_response_code_class) (rate(envoy_http_downstream_rq_xx'
             '{envoy_http_conn_manager_prefix="openai_api"}[5m]))', "{{envoy_response_code_class}}xx")],
            unit="reqps"),
    ])


def errors() -> dict:
    return _dashboard("llmaas-errors", "llmaas / errors", [
        _panel("Error ratio (5xx) by model", [
            (f'sum by (model) (rate(llmaas_router_requests_total{{status=~"5..",{M}}}[5m])) / '
             f"sum by (model) (rate(llmaas_router_requests_total{{{M}}}[5m]))", "{{model}}")], unit="percentunit"),
        _panel("Errors per second by status and code", [
            ('sum by (status, code) (rate(llmaas_router_requests_total{status!~"2.."}[5m]))',
             "{{status}} {{code}}")], unit="reqps"),
        _panel("gRPC calls not OK by service and method", [
            ('sum by (service, method, code) (rate(llmaas_grpc_server_handled_total{code!="OK"}[5m]))',
             "{{service}} {{method}} {{code}}")], unit="reqps"),
        _panel("gRPC latency p95 by service and method", [
            ("histogram_quantile(0.95, sum by (service, method, le) "
             "(rate(llmaas_grpc_server_handling_seconds_bucket[5m])))", "{{service}} {{method}}")], unit="s"),
        _panel("ext_authz decisions by outcome and code", [
            ("sum by (decision, code) (rate(llmaas_auth_ext_authz_decisions_total[5m]))", "{{decision}} {{code}}")],
            unit="reqps"),
        _panel("Metering refusals (429) by limit", [
            ("sum by (limit) (rate(llmaas_metering_refusals_total[5m]))", "{{limit}}")], unit="reqps"),
    ])


def guard() -> dict:
    return _dashboard("llmaas-guard", "llmaas / prompt guard", [
        _panel("Verdicts per second by decision and mode", [
            ("sum by (decision, mode) (rate(llmaas_guard_verdicts_total[5m]))", "{{decision}} ({{mode}})")],
            unit="reqps"),
        _panel("Blocked or flagged share of checked prompts", [
            ('sum(rate(llmaas_guard_verdicts_total{decision!="allow"}[5m])) / '
             "sum(rate(llmaas_guard_verdicts_total[5m]))", "flagged or blocked")], unit="percentunit"),
        _panel("Reasons per second (top 10)", [
            ("topk(10, sum by (reason) (rate(llmaas_guard_verdict_reasons_total[5m])))", "{{reason}}")]),
        _panel("Prompts refused at the router (prompt_rejected)", [
            ('sum by (model) (rate(llmaas_router_requests_total{code="prompt_rejected"}[5m]))', "{{model}}")],
            unit="reqps"),
        _panel("CheckPrompt latency p50 / p95", [
            ("histogram_quantile(0.5, sum by (le) (rate(llmaas_grpc_server_handling_seconds_bucket"
             '{service="guard",method="GuardInternalService/CheckPrompt"}[5m])))', "p50"),
            ("histogram_quantile(0.95, sum by (le) (rate(llmaas_grpc_server_handling_seconds_bucket"
             '{service="guard",method="GuardInternalService/CheckPrompt"}[5m])))', "p95")], unit="s"),
    ], model_variable=False)


def budgets() -> dict:
    return _dashboard("llmaas-budgets", "llmaas / budgets and spend", [
        _panel("Spend per hour by model (EUR)", [
            (f"sum by (model) (rate(llmaas_metering_cost_eur_total{{{M}}}[1h])) * 3600", "{{model}}")],
            unit="currencyEUR"),
        _panel("Tokens per second by type", [
            (f"sum by (type) (rate(llmaas_metering_tokens_total{{{M}}}[5m]))", "{{type}}")]),
        _panel("Energy per hour by model (kWh)", [
            (f"sum by (model) (rate(llmaas_metering_energy_kwh_total{{{M}}}[1h])) * 3600", "{{model}}")]),
        _panel("Settled requests per second by outcome", [
            (f"sum by (outcome) (rate(llmaas_metering_requests_total{{{M}}}[5m]))", "{{outcome}}")], unit="reqps"),
        _panel("Tenants over a share of their monthly budget", [
            ("max by (share) (llmaas_metering_tenants_over_budget_share)", ">= {{share}}")]),
        _panel("Refusals per second by limit", [
            ("sum by (limit) (rate(llmaas_metering_refusals_total[5m]))", "{{limit}}")], unit="reqps"),
        _panel("Reserve / settle latency p95", [
            ("histogram_quantile(0.95, sum by (le) (rate(llmaas_metering_reserve_seconds_bucket[5m])))", "reserve"),
            ("histogram_quantile(0.95, sum by (le) (rate(llmaas_metering_settle_seconds_bucket[5m])))", "settle")],
            unit="s"),
        _panel("Settlements capped at their reservation", [
            ("sum by (model) (rate(llmaas_metering_capped_settlements_total[5m]))", "{{model}}")]),
    ])


def backends() -> dict:
    return _dashboard("llmaas-backends", "llmaas / backends", [
        _panel("Replicas in rotation (router's circuit breakers)", [
            ('min by (replica) (llmaas_router_replica_in_rotation{model=""})', "{{replica}}")]),
        _panel("Backend errors per second by replica and scope", [
            ("sum by (replica, scope) (rate(llmaas_router_backend_errors_total[5m]))", "{{replica}} {{scope}}")]),
        _panel("Triton inferences per second by model", [
            ("sum by (model) (rate(nv_inference_request_success[5m]))", "ok {{model}}"),
            ("sum by (model) (rate(nv_inference_request_failure[5m]))", "failed {{model}}")], unit="reqps"),
        _panel("Triton queue time per request by model", [
            ("sum by (model) (rate(nv_inference_queue_duration_us[5m])) / "
             "clamp_min(sum by (model) (rate(nv_inference_request_success[5m])), 1e-9) / 1e6", "{{model}}")],
            unit="s"),
        _panel("Envoy upstream health by cluster", [
            ("sum by (envoy_cluster_name) (envoy_cluster_membership_healthy)", "{{envoy_cluster_name}}")]),
        _panel("Envoy upstream 5xx by cluster", [
            ('sum by (envoy_cluster_name) (rate(envoy_cluster_upstream_rq_xx{envoy_response_code_class="5"}[5m]))',
             "{{envoy_cluster_name}}")], unit="reqps"),
        _panel("Scrape targets up", [("up", "{{job}} {{instance}}")]),
    ], model_variable=False)


DASHBOARDS = {"traffic-latency": traffic, "errors": errors, "guard": guard, "budgets-spend": budgets,
              "backends": backends}


def render() -> dict[str, str]:
    return {f"{name}.json": json.dumps(build(), indent=2, sort_keys=True) + "\n" for name, build in DASHBOARDS.items()}


def queries(dashboard: dict) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p["targets"]]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--check", action="store_true", help="fail if the JSON files are not what this file makes")
    check = parser.parse_args().check
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, text in render().items():
        path = OUT / name
        if check:
            if not path.exists() or path.read_text() != text:
                stale.append(name)
        else:
            path.write_text(text)
    if stale:
        sys.exit(f"stale dashboards (run python -m llmaas.observability.dashboards): {', '.join(stale)}")


if __name__ == "__main__":
    main()
