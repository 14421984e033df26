"""Auth's Prometheus metrics (llmaas.common.metrics serves them): the edge's ext_authz decisions by outcome and
error code (the platform's codes: invalid_api_key, key_revoked, ...). Never a key or tenant id."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

from llmaas.common.metrics import LATENCY_BUCKETS, REGISTRY, Children

DECISIONS = Counter("llmaas_auth_ext_authz_decisions", "ext_authz answers to the edge: allow, deny (the key is "
                    "refused) or error (auth could not decide: 503), by error code.", ["decision", "code"],
                    registry=REGISTRY)
_ALLOWED = DECISIONS.labels("allow", "")  # the common case, resolved once
_decisions = Children(DECISIONS)


# Over HTTP the gRPC server's call histogram does not see ext_authz: this one does, whatever the transport.
DECISION_SECONDS = Histogram("llmaas_auth_ext_authz_decision_seconds", "Time auth took to decide an ext_authz "
                             "request (key verification, audit record hand-off), whatever the transport.",
                             buckets=LATENCY_BUCKETS, registry=REGISTRY)


def allowed() -> None:
    _ALLOWED.inc()


def refused(decision: str, code: str | None) -> None:
    _decisions(decision, code or "").inc()

AUDIT_VERIFICATIONS = Counter("llmaas_auth_audit_chain_verifications", "Verifications of the audit trail's hash "
                              "chain (VerifyAuditChain: `llmaas audit verify`), by result: ok or broken.", ["result"],
                              registry=REGISTRY)
for _result in ("ok", "broken"):  # both series exist from the start: an alert's increase() sees the first failure
    AUDIT_VERIFICATIONS.labels(_result)


def audit_verified(ok: bool) -> None:
    AUDIT_VERIFICATIONS.labels("ok" if ok else "broken").inc()
