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
RESERVE_SECONDS = Histogram("llmaas_metering_reserve_seconds", "Time to reserve (one SQL transaction).",
                            registry=REGISTRY, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1))
SETTLE_SECONDS = Histogram("llmaas_metering_settle_seconds", "Time to settle (one SQL transaction).",
                           registry=REGISTRY, buckets=(.0005, .001, .002, .005, .01, .02, .05, .1, .25, 1))


def settled(s: Settlement, outcome: str) -> None:
    REQUESTS.labels(s.tenant_id, s.model, outcome).inc()
    for kind, n in (("prompt", s.usage.prompt_tokens), ("completion", s.usage.completion_tokens),
                    ("reasoning", s.usage.reasoning_tokens)):
        if n:
            TOKENS.labels(s.tenant_id, s.model, kind).inc(n)
    if s.cost_nano:
        COST.labels(s.tenant_id, s.model).inc(s.cost_nano / 1e9)
    if s.energy_uwh:
        ENERGY.labels(s.tenant_id, s.model).inc(s.energy_uwh / 1e9)


def refused(tenant_id: str, model: str, limit: str) -> None:
    REFUSALS.labels(tenant_id, model, limit).inc()
