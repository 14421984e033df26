"""The guard's Prometheus metrics (llmaas.common.metrics serves them): verdicts by decision and mode, and the
reasons behind them. Reasons are the guard's own names (rules, structure, behaviour, the classifier): a bounded set.
No tenant and no prompt text."""

from __future__ import annotations

from prometheus_client import Counter

from llmaas.common.metrics import REGISTRY, Children

VERDICTS = Counter("llmaas_guard_verdicts", "Prompts checked, by decision (allow, flag: over the threshold in shadow "
                   "mode, block) and the tenant's guard mode.", ["decision", "mode"], registry=REGISTRY)
REASONS = Counter("llmaas_guard_verdict_reasons", "Reasons found in checked prompts (one count per reason per "
                  "verdict), by decision.", ["decision", "reason"], registry=REGISTRY)

_verdicts, _reasons = Children(VERDICTS), Children(REASONS)


def verdict(decision: str, mode: str, reasons: list[str]) -> None:
    _verdicts(decision, mode).inc()
    for reason in reasons:
        _reasons(decision, reason).inc()
