"""The shared metrics: the gRPC interceptor counts and times every call by method and final status (OK, an
ApiError's status, a cancelled stream), health checks left out; bounded label helpers; the metering budget gauge;
the stack's scrape targets."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time

import grpc
import pytest
from llmaas.common import metrics as common_metrics
from llmaas.common.errors import ApiError
from llmaas.common.metrics import REGISTRY, MetricsInterceptor, tenant_label
from llmaas.common.server import ErrorInterceptor
from llmaas.metering import metrics as metering_metrics
from llmaas.metering.pricing import Usage
from llmaas.stack.ports import StackPorts
from llmaas.stack.up import prometheus_targets, scrape_targets
from prometheus_client import generate_latest

from tests.unit.test_ledger import NOW, _ledger, _r


def _value(name: str, labels: dict[str, str]) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


async def _serve_and_call(service: str):
    async def ok(request, context):
        return b"pong"

    async def refused(request, context):
        raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "slow down", code="rate_limited")

    async def stream(request, context):
        for _ in range(100):
            yield b"x"
            await asyncio.sleep(0.01)

    handlers = grpc.method_handlers_generic_handler("t.v1.Test", {
        "Ok": grpc.unary_unary_rpc_method_handler(ok),
        "Refused": grpc.unary_unary_rpc_method_handler(refused),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    })
    server = grpc.aio.server(interceptors=[MetricsInterceptor(service), ErrorInterceptor()])
    server.add_generic_rpc_handlers((handlers,))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            assert await channel.unary_unary("/t.v1.Test/Ok")(b"") == b"pong"
            with pytest.raises(grpc.aio.AioRpcError) as refused_call:
                await channel.unary_unary("/t.v1.Test/Refused")(b"")
            assert refused_call.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            call = channel.unary_stream("/t.v1.Test/Stream")(b"")
            async for _ in call:
                break
            call.cancel()  # the client leaves after the first message
            await asyncio.sleep(0.2)
    finally:
        await server.stop(None)


def test_interceptor_counts_every_call_by_method_and_status():
    asyncio.run(_serve_and_call("unit-test"))
    counted = {m: {c: _value("llmaas_grpc_server_handled_total", {"service": "unit-test", "method": f"Test/{m}",
                                                                    "code": c})
                   for c in ("OK", "RESOURCE_EXHAUSTED", "CANCELLED")} for m in ("Ok", "Refused", "Stream")}
    assert counted["Ok"] == {"OK": 1, "RESOURCE_EXHAUSTED": 0, "CANCELLED": 0}
    assert counted["Refused"] == {"OK": 0, "RESOURCE_EXHAUSTED": 1, "CANCELLED": 0}
    assert counted["Stream"]["CANCELLED"] == 1
    assert _value("llmaas_grpc_server_handling_seconds_count", {"service": "unit-test", "method": "Test/Ok"}) == 1


def test_tenant_labels_are_opt_in(monkeypatch):
    assert tenant_label("tenant-123") == "all"
    monkeypatch.setattr(common_metrics, "_tenant_labels", True)
    assert tenant_label("tenant-123") == "tenant-123"


def test_exposition_names_no_tenant_or_key_by_default():
    text = generate_latest(REGISTRY).decode()
    assert "tenant=\"" not in text.replace('tenant="all"', "")
    assert "key_id" not in text


def test_budget_gauge_counts_tenants_near_their_budget(tmp_path):
    ledger = _ledger(f"sqlite:///{tmp_path / 'm.db'}")
    ledger.set_tenant_tier("t", "tier1", 1_000_000, NOW)  # 0.001 EUR a month
    ledger.set_tenant_tier("u", "tier1", 1_000_000_000, NOW)
    for tenant in ("t", "u"):
        assert ledger.reserve(_r(f"r-{tenant}", tenant=tenant, max_in=100, max_out=50), NOW).granted
        ledger.settle(f"r-{tenant}", Usage(40, 20), "completed", NOW)
    use = dict(ledger.budget_use(NOW))
    assert use["t"] == pytest.approx(0.232) and use["u"] == pytest.approx(0.000232)
    assert ledger.budget_use(NOW + dt.timedelta(days=40)) == []  # a new month: nothing charged yet
    collector = metering_metrics.BudgetUse(ledger)
    collector._ledger = _AtNow(ledger)
    [family] = list(collector.collect())
    shares = {s.labels["share"]: s.value for s in family.samples}
    assert shares == {"0.5": 0, "0.8": 0, "0.9": 0, "1": 0}
    ledger.set_tenant_tier("t", "tier1", 300_000, NOW)  # now 232 000 of 300 000: 77 %
    shares = {s.labels["share"]: s.value for s in next(iter(collector.collect())).samples}
    assert shares == {"0.5": 1, "0.8": 0, "0.9": 0, "1": 0}


class _AtNow:
    """The ledger seen at the tests' fixed date."""

    def __init__(self, ledger) -> None:
        self._ledger = ledger

    def budget_use(self, now):
        return self._ledger.budget_use(NOW)


def test_scrape_targets_list_every_process_and_group_by_job():
    ports = StackPorts(30000)
    targets = scrape_targets(ports, auth_replicas=2, triton_replicas_=2)
    assert targets["router"] == "http://127.0.0.1:30036/metrics"
    assert targets["auth-2"] == "http://127.0.0.1:30033/metrics"
    assert targets["envoy"] == "http://127.0.0.1:30001/stats/prometheus"
    assert targets["triton-2"] == "http://127.0.0.1:30022/metrics"
    jobs = {g["labels"]["job"]: g for g in prometheus_targets(targets)}
    assert sorted(jobs) == ["envoy", "llmaas-auth", "llmaas-catalog", "llmaas-guard", "llmaas-metering",
                            "llmaas-router", "triton"]
    assert jobs["llmaas-auth"]["targets"] == ["127.0.0.1:30032", "127.0.0.1:30033"]
    assert jobs["envoy"]["labels"]["__metrics_path__"] == "/stats/prometheus"
    json.dumps(list(jobs.values()))


def test_a_stage_is_timed_by_stage_and_model():
    from llmaas.router import metrics as router_metrics

    labels = {"stage": "checks", "model": "stage-test-model"}
    before = REGISTRY.get_sample_value("llmaas_router_stage_seconds_count", labels) or 0.0
    router_metrics.stage_ended("checks", "stage-test-model", time.perf_counter() - 0.01)
    assert REGISTRY.get_sample_value("llmaas_router_stage_seconds_count", labels) == before + 1
    assert REGISTRY.get_sample_value("llmaas_router_stage_seconds_sum", labels) >= 0.01
