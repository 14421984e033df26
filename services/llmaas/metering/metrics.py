"""Prometheus metrics of the metering service (llmaas.common.metrics: served on LLMAAS_METRICS_PORT): tokens, cost,
energy and refusals by model, and by tenant when the operator opted in (tenant_label). Never prompt text. Cost is a float here (a dashboard's view); the
ledger holds the exact amounts."""

from __future__ import annotations

import datetime as dt
import logging

from prometheus_client import Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from llmaas.common.metrics import REGISTRY, tenant_label, tenant_labels_enabled
from llmaas.metering.ledger import Ledger, Settlement

log = logging.getLogger("llmaas.metering.metrics")
# The shares of a monthly budget the metrics count tenants over (the "budget nearly spent" alert uses 0.9).
BUDGET_THRESHOLDS = (0.5, 0.8, 0.9, 1.0)

TOKENS = Counter("llmaas_metering_tokens", "Tokens settled, by type (prompt, completion, reasoning).",
                 ["tenant", "model", "type"], registry=REGISTRY)
COST = Counter("llmaas_metering_cost_eur", "Cost settled, in EUR.", ["tenant", "model"], registry=REGISTRY)
ENERGY = Counter("llmaas_metering_energy_kwh", "Estimated energy of settled requests, in kWh.", ["tenant", "model"],
                 registry=REGISTRY)
REQUESTS = Counter("llmaas_metering_requests", "Requests settled, by outcome.", ["tenant", "model", "outcome"],
                   registry=REGISTRY)
REFUSALS = Counter("llmaas_metering_refusals", "Reservations refused (HTTP 429), by the limit that ran out "
                   "(requests, tokens, output_tokens, budget).", ["tenant", "model", "limit"], registry=REGISTRY)
CAPPED = Counter("llmaas_metering_capped_settlements", "Settlements that claimed more than their reservation (capped "
                 "at it, the excess refused).", ["tenant", "model"], registry=REGISTRY)
RESERVE_SECONDS = Histogram("llmaas_metering_reserve_seconds", "Time to reserve (its round's transaction, and the "
                            "round before it still committing).",
                            registry=REGISTRY, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1))
SETTLE_SECONDS = Histogram("llmaas_metering_settle_seconds", "Time to settle a Settle or SettleBatch call (its "
                           "rounds' transactions).",
                           registry=REGISTRY, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1))


def settled_many(settled: list[tuple[Settlement, str]]) -> None:
    """Counts settled requests, their tokens, cost and energy: summed per tenant and model first (one label lookup
    each per round of settlements, not one per request)."""
    by_label: dict[tuple[str, str], list[int]] = {}
    outcomes: dict[tuple[str, str, str], int] = {}
    for s, outcome in settled:
        tenant = tenant_label(s.tenant_id)
        sums = by_label.setdefault((tenant, s.model), [0, 0, 0, 0, 0])
        for i, n in enumerate((s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.reasoning_tokens,
                               s.cost_nano, s.energy_uwh)):
            sums[i] += n
        outcomes[(tenant, s.model, outcome)] = outcomes.get((tenant, s.model, outcome), 0) + 1
    for labels, n in outcomes.items():
        REQUESTS.labels(*labels).inc(n)
    for (tenant, model), (prompt, completion, reasoning, cost, energy) in by_label.items():
        for kind, n in (("prompt", prompt), ("completion", completion), ("reasoning", reasoning)):
            if n:
                TOKENS.labels(tenant, model, kind).inc(n)
        if cost:
            COST.labels(tenant, model).inc(cost / 1e9)
        if energy:
            ENERGY.labels(tenant, model).inc(energy / 1e9)


def refused(tenant_id: str, model: str, limit: str) -> None:
    REFUSALS.labels(tenant_label(tenant_id), model, limit).inc()


class BudgetUse(Collector):
    """At scrape time (on the metrics server's thread, never the event loop): how many tenants have spent at least
    50/80/90/100 % of their monthly budget (llmaas_metering_tenants_over_budget_share), and, when the operator opted in
    to tenant labels, each tenant's share (llmaas_metering_budget_used_ratio)."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger

    def collect(self):
        try:
            use = self._ledger.budget_use(dt.datetime.now(dt.UTC))
        except Exception:  # noqa: BLE001 - a scrape must not fail with the database: the other metrics still count
            log.exception("budget use not read")
            return
        over = GaugeMetricFamily("llmaas_metering_tenants_over_budget_share", "Tenants whose month's charge is at "
                                 "least this share of their monthly budget.", labels=["share"])
        for threshold in BUDGET_THRESHOLDS:
            over.add_metric([f"{threshold:g}"], sum(ratio >= threshold for _, ratio in use))
        yield over
        if tenant_labels_enabled():
            ratios = GaugeMetricFamily("llmaas_metering_budget_used_ratio", "A tenant's month's charge over its "
                                       "monthly budget.", labels=["tenant"])
            for tenant, ratio in use:
                ratios.add_metric([tenant], ratio)
            yield ratios


def watch_budgets(ledger: Ledger) -> None:
    REGISTRY.register(BudgetUse(ledger))
