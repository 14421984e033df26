"""Prometheus metrics of the metering service (served on LLMAAS_METERING_METRICS_PORT): tokens, cost, energy and
refusals by tenant and model. Labels are ids only, never prompt text. Cost is a float here (a dashboard's view); the
ledger holds the exact amounts."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

from llmaas.metering.ledger import Settlement

REGISTRY = CollectorRegistry()

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
        sums = by_label.setdefault((s.tenant_id, s.model), [0, 0, 0, 0, 0])
        for i, n in enumerate((s.usage.prompt_tokens, s.usage.completion_tokens, s.usage.reasoning_tokens,
                               s.cost_nano, s.energy_uwh)):
            sums[i] += n
        outcomes[(s.tenant_id, s.model, outcome)] = outcomes.get((s.tenant_id, s.model, outcome), 0) + 1
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
    REFUSALS.labels(tenant_id, model, limit).inc()
