"""The public status: the router's traffic windows (success rate, medians of the last 5 minutes), the catalog's
sampled availability and incidents (replica down, model reloading, model unavailable, by pool position, never by
address), the page that joins them, and `llmaas status`'s table."""

from __future__ import annotations

import asyncio
import dataclasses

from llmaas.catalog.entries import load_catalog
from llmaas.catalog.pools import Pools
from llmaas.catalog.served import Snapshot
from llmaas.catalog.status import ServingHistory
from llmaas.cli.status import render
from llmaas.router.status import StatusPage, Traffic
from llmaas.stack.paths import DEFAULT_CATALOG
from rich.console import Console

CATALOG = load_catalog([DEFAULT_CATALOG])
CHAT = next(m for m in CATALOG.models if m.type == "chat" and m.triton_model)
A, B = "10.0.0.1:8001", "10.0.0.2:8001"
POOLS = Pools({CHAT.pool: (A, B)})


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_traffic_windows_count_platform_failures_and_take_recent_medians():
    clock = Clock()
    traffic = Traffic(clock)
    for status in (200, 200, 200, 429, 499, 503):  # a refusal and a client gone are not the platform's failures
        traffic.request("m", status)
    for ttft, rate in ((0.1, 10.0), (0.3, 30.0), (0.2, None)):
        traffic.latency("m", ttft, rate)
    summary = traffic.summary("m")
    assert summary["requests_1h"] == 6 and summary["success_rate_1h"] == round(5 / 6, 5)
    assert summary["ttft_p50_ms"] == 200.0 and summary["tokens_per_second_p50"] == 20.0
    assert summary["samples_5m"] == 3
    clock.now += 301  # latency samples age out after 5 minutes; counts stay for the hour
    summary = traffic.summary("m")
    assert "ttft_p50_ms" not in summary and summary["samples_5m"] == 0 and summary["requests_1h"] == 6
    clock.now += 3600
    summary = traffic.summary("m")
    assert summary["requests_1h"] == 0 and "success_rate_1h" not in summary and "success_rate_24h" in summary
    clock.now += 24 * 3600
    assert "success_rate_24h" not in traffic.summary("m")
    assert traffic.summary("unknown") == {"requests_1h": 0, "samples_5m": 0}


def _snapshot(ready: dict[str, frozenset[str]]) -> Snapshot:
    return Snapshot(POOLS, ready, frozenset({CHAT.triton_model}))


def test_serving_history_samples_availability_and_names_incidents_by_position():
    clock = Clock(1_000_020.0)
    history = ServingHistory(clock)
    both = _snapshot({A: frozenset({CHAT.triton_model}), B: frozenset({CHAT.triton_model})})
    for _ in range(3):
        history.sample(CATALOG, both)
    none = _snapshot({})
    history.sample(CATALOG, none)
    status = history.status(CATALOG, both, (frozenset(), frozenset()))
    [model] = [m for m in status.models if m.id == CHAT.id]
    assert model.availability_1h == 0.75 and model.replicas == 2 and model.replicas_serving == 2
    assert not model.incidents

    clock.now += 10
    one = _snapshot({A: frozenset({CHAT.triton_model})})
    status = history.status(CATALOG, one, (frozenset({B}), frozenset()))
    [model] = [m for m in status.models if m.id == CHAT.id]
    assert [(i.kind, i.replica, i.since) for i in model.incidents] == [("replica_down", 2, 1_000_030)]
    assert model.replicas_serving == 1
    clock.now += 10  # the same incident keeps its start
    status = history.status(CATALOG, one, (frozenset({B}), frozenset()))
    assert [i.since for m in status.models if m.id == CHAT.id for i in m.incidents] == [1_000_030]

    status = history.status(CATALOG, none, (frozenset(), frozenset({(A, CHAT.triton_model)})))
    [model] = [m for m in status.models if m.id == CHAT.id]
    assert {(i.kind, i.replica) for i in model.incidents} == {("model_reloading", 1), ("model_unavailable", 0)}
    assert A not in str(status) and B not in str(status)  # positions, never addresses


def test_status_page_joins_serving_state_and_traffic_and_caches():
    history = ServingHistory(Clock())
    one = _snapshot({A: frozenset({CHAT.triton_model})})
    history.sample(CATALOG, one)
    calls = []

    async def serving_status():
        calls.append(1)
        return history.status(CATALOG, one, (frozenset({B}), frozenset()))

    traffic = Traffic()
    traffic.request(CHAT.id, 200)
    traffic.latency(CHAT.id, 0.25, 12.5)
    page = StatusPage(serving_status, traffic, source="router-test")

    async def twice():
        return await page.get(), await page.get()

    first, second = asyncio.run(twice())
    assert first is second and len(calls) == 1  # cached: a public endpoint costs one catalog call per second
    [model] = [m for m in first.data if m.id == CHAT.id]
    assert first.status == "degraded" and model.status == "degraded"
    assert model.ttft_p50_ms == 250.0 and model.tokens_per_second_p50 == 12.5 and model.success_rate_1h == 1.0
    assert model.availability_1h == 1.0 and model.incidents[0].kind == "replica_down"
    assert first.object == "status" and first.source == "router-test"

    down = dataclasses.replace(one, ready={})
    outage = page.build(history.status(CATALOG, down, (frozenset({A, B}), frozenset())))
    assert outage.status == "outage"


def test_cli_table_shows_each_model():
    status = {"object": "status", "status": "degraded", "updated_at": 1_000_000, "source": "router-1", "data": [
        {"id": "m1", "status": "degraded", "replicas": 2, "replicas_serving": 1, "availability_1h": 0.5,
         "requests_1h": 3, "ttft_p50_ms": 123.4, "tokens_per_second_p50": 20.0,
         "incidents": [{"kind": "replica_down", "replica": 2, "since": 1_000_000}]},
        {"id": "m2", "status": "operational", "replicas": 1, "replicas_serving": 1}]}
    console = Console(width=250, record=True)
    console.print(render(status))
    text = console.export_text()
    assert "m1" in text and "1/2" in text and "50.00%" in text and "123 ms" in text
    assert "replica_down on replica 2" in text and "m2" in text
