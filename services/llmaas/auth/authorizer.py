"""One decision for every credential, wherever it is presented (Envoy's ext_authz, or Authenticate for direct gRPC
callers): who is calling, may this credential call this API, and the audit record of the attempt.

- Model API (/v1/...): an application key (role `key`), active (not revoked, not expired).
- Admin API (/admin/v1/...): the platform admin token, or a tenant admin key (role `tenant_admin`), which the admin
  RPCs then confine to its own tenant.

A failed authentication (401) is limited per client address and audited as a count (llmaas.auth.abuse); every other
outcome has its own audit record.
"""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from opentelemetry import trace

from llmaas.auth.abuse import DenialTally, FailureLimiter, rate_limited
from llmaas.auth.audit import AuditLog, AuditRecord, AuditUnavailable
from llmaas.auth.sso import SsoVerifier, looks_like_jwt
from llmaas.auth.store import Denial, KeyStore
from llmaas.common.errors import ApiError
from llmaas.common.identity import PLATFORM_ADMIN, ROLE_KEY, ROLE_TENANT_ADMIN, Identity, is_admin_token

MISSING = ApiError(
    grpc.StatusCode.UNAUTHENTICATED,
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY).",
    code="missing_api_key",
)
_DENIALS = {
    Denial.INVALID: ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid API key provided.", code="invalid_api_key"),
    Denial.EXPIRED: ApiError(grpc.StatusCode.UNAUTHENTICATED, "This API key has expired. Ask your administrator "
                             "for a new one.", code="expired_api_key"),
    Denial.REVOKED: ApiError(grpc.StatusCode.UNAUTHENTICATED, "This API key has been revoked.",
                             code="revoked_api_key"),
}
_ADMIN_KEY_ON_MODELS = ApiError(
    grpc.StatusCode.PERMISSION_DENIED, "This is a tenant admin key: it manages keys and reads the audit trail, but "
    "cannot call models. Use an application API key.", code="permission_denied")
_APP_KEY_ON_ADMIN = ApiError(
    grpc.StatusCode.PERMISSION_DENIED, "This API key cannot call the admin API. Use a tenant admin key or the "
    "platform admin token.", code="permission_denied")
_BAD_SSO_TOKEN = ApiError(
    grpc.StatusCode.UNAUTHENTICATED, "The SSO token was not accepted (signature, issuer, audience, expiry or role).",
    code="invalid_sso_token")
_ADMIN_TOKEN_ON_MODELS = ApiError(
    grpc.StatusCode.PERMISSION_DENIED, "The platform admin token cannot call models. Use an application API key.",
    code="permission_denied")

HTTP_STATUS = {grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403}


@dataclass(frozen=True)
class Attempt:
    """What the audit record says about a request besides its outcome."""
    endpoint: str
    client_address: str = ""
    request_id: str = ""
    trace_id: str = ""


def current_trace_id(fallback_traceparent: str = "") -> str:
    ctx = trace.get_current_span().get_span_context()
    if ctx.trace_id:
        return format(ctx.trace_id, "032x")
    parts = fallback_traceparent.split("-")
    return parts[1] if len(parts) == 4 and len(parts[1]) == 32 else ""


def denied_record(attempt: Attempt, status: int, reason: str) -> AuditRecord:
    return AuditRecord(tenant_id="", key_id="", actor="", action="request.denied", endpoint=attempt.endpoint,
                       status=status, client_address=attempt.client_address, trace_id=attempt.trace_id,
                       request_id=attempt.request_id, detail=reason)


class Authorizer:
    def __init__(self, store: KeyStore, audit: AuditLog, admin_token: str, sso: SsoVerifier | None = None, *,
                 limiter: FailureLimiter | None = None, tally: DenialTally | None = None) -> None:
        self._store = store
        self._audit = audit
        self._admin_token = admin_token
        self._sso = sso
        self._limiter = FailureLimiter() if limiter is None else limiter
        self._tally = DenialTally(audit) if tally is None else tally

    def _decide(self, token: str | None, admin_api: bool) -> Identity | ApiError:
        if not token:
            return MISSING
        if is_admin_token(token, self._admin_token):
            return PLATFORM_ADMIN if admin_api else _ADMIN_TOKEN_ON_MODELS
        if admin_api and self._sso is not None and looks_like_jwt(token):
            return self._sso.verify(token) or _BAD_SSO_TOKEN
        verdict = self._store.verify(token)
        if isinstance(verdict, Denial):
            return _DENIALS[verdict]
        if admin_api and verdict.role != ROLE_TENANT_ADMIN:
            return _APP_KEY_ON_ADMIN
        if not admin_api and verdict.role != ROLE_KEY:
            return _ADMIN_KEY_ON_MODELS
        return verdict.identity()

    async def authorize(self, token: str | None, attempt: Attempt, *, admin_api: bool) -> Identity | ApiError:
        """The caller's identity, or the error to answer with. The audit record of the attempt is written behind
        (llmaas.auth.audit: durable within its bound), or awaited while the writer is behind that bound; when the audit
        log cannot take it, AuditUnavailable is raised and the caller fails closed."""
        decision = self._decide(token, admin_api)
        if isinstance(decision, ApiError):
            if decision.status == grpc.StatusCode.UNAUTHENTICATED:
                return self._failed(decision, attempt)
            record = denied_record(attempt, HTTP_STATUS.get(decision.status, 401), decision.code or "")
        else:
            record = AuditRecord(tenant_id=decision.tenant_id, key_id=decision.key_id, actor=decision.key_id,
                                 action="request.authorized", endpoint=attempt.endpoint, status=200,
                                 client_address=attempt.client_address, trace_id=attempt.trace_id,
                                 request_id=attempt.request_id)
        committed = self._audit.submit(record)
        if committed is not None:
            await committed
        return decision

    def _failed(self, error: ApiError, attempt: Attempt) -> ApiError:
        """A failed authentication: answered at once, 401 or past the address's budget 429, and counted for the
        audit trail (no record, no write of its own). Still fail closed: no answer but 503 while the audit trail
        cannot take records."""
        refusal = self._audit.refusal()
        if refusal is not None:
            raise AuditUnavailable(refusal)
        reason = error.code or ""
        wait = self._limiter.take(attempt.client_address)
        if wait:
            error = rate_limited(wait)
        self._tally.count(denied_record(attempt, 429 if wait else 401, reason))
        return error

    def flush_failures(self) -> None:
        """Hands the failed authentications counted so far to the audit log (tests; shutdown: `close`)."""
        self._tally.flush()

    async def close(self) -> None:
        await self._tally.close()
