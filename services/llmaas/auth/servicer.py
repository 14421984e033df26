"""llmaas.auth.v1.AuthService: key verification for direct gRPC callers, the admin API, and the audit trail.

Every admin action leaves an audit record before its answer goes out. Tenant admins are confined to their own tenant
(require_admin); only the platform admin creates tenants, lists them and verifies the whole chain.
"""

from __future__ import annotations

import asyncio
import fnmatch
from datetime import UTC, datetime, timedelta

import grpc
from google.protobuf import timestamp_pb2

from llmaas.auth import metrics
from llmaas.auth.audit import COMPLETED, AuditLog, AuditRecord
from llmaas.auth.authorizer import Attempt, Authorizer, current_trace_id
from llmaas.auth.store import KEY_ROLES, KeyRecord, KeyStore, NotFound, Tenant, TenantExists
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.call_stream import serve_stream
from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import (
    IDENTITY_HEADER,
    ROLE_KEY,
    Identity,
    Quota,
    client_address,
    decode_identity,
    metadata_dict,
    require_admin,
)

_MAX_AUDIT_PAGE = 1000
# Audit sequence numbers are signed 64-bit in the database: none is beyond this, and a larger after_seq (the API's
# uint64) was a database error, a 500 (found by the fuzzer).
_MAX_SEQ = 2**63 - 1
# Beyond these, the dates they make overflowed Python's datetime (a 500, found by the fuzzer): ten years between
# automatic rotations, a year of grace for the previous secret.
MAX_ROTATION_PERIOD_DAYS = 3650
MAX_GRACE_SECONDS = 365 * 86400
# Records per RecordRequests call (the router sends at most 256).
_MAX_RECORDS_PER_CALL = 1000


def _ts(value: datetime | None) -> timestamp_pb2.Timestamp | None:
    if value is None:
        return None
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(UTC))
    return ts


def tenant_message(t: Tenant) -> auth_pb2.Tenant:
    return auth_pb2.Tenant(tenant_id=t.id, name=t.name, created_at=_ts(t.created_at),
                           serve_successor=t.serve_successor)


def _quota_messages(quotas) -> list[auth_pb2.Quota]:
    return [auth_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests, max_tokens=q.max_tokens)
            for q in quotas]


def key_message(k: KeyRecord, now: datetime) -> auth_pb2.ApiKey:
    return auth_pb2.ApiKey(
        key_id=k.id, tenant_id=k.tenant_id, name=k.name, labels=k.labels, role=k.role,
        allowed_models=list(k.allowed_models), quotas=_quota_messages(k.quotas), created_at=_ts(k.created_at),
        expires_at=_ts(k.expires_at), revoked_at=_ts(k.revoked_at), rotated_at=_ts(k.rotated_at),
        previous_valid_until=_ts(k.previous_valid_until), rotation_period_days=k.rotation_period_days,
        next_rotation_at=_ts(k.next_rotation_at), rotated_secret_pending=k.rotated_secret_pending,
        status=k.status(now))


def identity_message(i: Identity) -> auth_pb2.Identity:
    return auth_pb2.Identity(tenant_id=i.tenant_id, key_id=i.key_id, role=i.role, allowed_models=list(i.models),
                             quotas=_quota_messages(i.quotas), serve_successor=i.serve_successor)


def _validate_key_request(request: auth_pb2.CreateApiKeyRequest, now: datetime) -> None:
    if len(request.name) > 200:
        raise invalid_request("name must be at most 200 characters", param="name", code="invalid_value")
    if request.role and request.role not in KEY_ROLES:
        raise invalid_request(f"role must be one of {list(KEY_ROLES)}", param="role", code="invalid_value")
    for pattern in request.allowed_models:
        if not pattern.strip() or len(pattern) > 200:
            raise invalid_request("allowed_models entries must be non-empty model ids or patterns",
                                  param="allowed_models", code="invalid_value")
        try:
            fnmatch.translate(pattern)
        except Exception:  # noqa: BLE001 - any pattern error is the client's
            raise invalid_request(f"invalid model pattern {pattern!r}", param="allowed_models") from None
    for q in request.quotas:
        if q.window_seconds == 0 or (q.max_requests == 0 and q.max_tokens == 0):
            raise invalid_request("each quota needs window_seconds > 0 and max_requests or max_tokens",
                                  param="quotas", code="invalid_value")
    if request.HasField("expires_at") and request.expires_at.ToDatetime(tzinfo=UTC) <= now:
        raise invalid_request("expires_at must be in the future", param="expires_at", code="invalid_value")
    if len(request.labels) > 32 or any(len(k) > 64 or len(v) > 256 for k, v in request.labels.items()):
        raise invalid_request("at most 32 labels, keys up to 64 and values up to 256 characters", param="labels")
    if request.rotation_period_days > MAX_ROTATION_PERIOD_DAYS:
        raise invalid_request(f"rotation_period_days must be at most {MAX_ROTATION_PERIOD_DAYS}",
                              param="rotation_period_days", code="invalid_value")
    _check_grace(request.rotation_grace_seconds, "rotation_grace_seconds")


def _check_grace(seconds: int, param: str) -> None:
    if seconds > MAX_GRACE_SECONDS:
        raise invalid_request(f"{param} must be at most {MAX_GRACE_SECONDS} (a year)", param=param,
                              code="invalid_value")


class AuthServicer(auth_pb2_grpc.AuthServiceServicer, auth_pb2_grpc.AuthInternalServiceServicer):
    def __init__(self, store: KeyStore, audit: AuditLog, authorizer: Authorizer, admin_token: str,
                 internal_secret: str) -> None:
        self._store = store
        self._audit = audit
        self._authorizer = authorizer
        self._admin_token = admin_token
        self._secret = internal_secret

    def _admin(self, context, tenant_id: str = "") -> Identity:
        return require_admin(context, self._admin_token, self._secret, tenant_id)

    async def _record(self, context, actor: Identity, action: str, *, tenant_id: str, key_id: str = "",
                      detail: str = "") -> None:
        md = metadata_dict(context)
        await self._audit.append(AuditRecord(
            tenant_id=tenant_id, key_id=key_id, actor=actor.key_id, action=action,
            endpoint=f"rpc {action}", status=200, client_address=client_address(md, context),
            trace_id=current_trace_id(), request_id=md.get("x-request-id", ""), detail=detail))

    def _tenant(self, tenant_id: str) -> None:
        if not self._store.tenant_exists(tenant_id):
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Tenant {tenant_id!r} does not exist",
                           param="tenant_id", code="tenant_not_found")

    def _key_call(self, fn, tenant_id: str, key_id: str, *args):
        try:
            return fn(tenant_id, key_id, *args)
        except NotFound:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"API key {key_id!r} does not exist in this tenant "
                           "(or is revoked)", param="key_id", code="key_not_found") from None

    async def Authenticate(self, request, context):
        attempt = Attempt(endpoint=request.endpoint or "grpc", client_address=request.client_address,
                          request_id=request.request_id, trace_id=current_trace_id())
        decision = await self._authorizer.authorize(request.api_key, attempt, admin_api=False)
        if isinstance(decision, ApiError):
            raise decision
        return auth_pb2.AuthenticateResponse(identity=identity_message(decision))

    async def CreateTenant(self, request, context):
        actor = self._admin(context)
        name = request.name.strip()
        if not name or len(name) > 200:
            raise invalid_request("Tenant name must be 1 to 200 characters", param="name")
        try:
            tenant = self._store.create_tenant(name)
        except TenantExists:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Tenant {name!r} already exists",
                           type="invalid_request_error", param="name", code="tenant_exists") from None
        await self._record(context, actor, "tenant.create", tenant_id=tenant.id)
        return auth_pb2.CreateTenantResponse(tenant=tenant_message(tenant))

    async def ListTenants(self, request, context):
        self._admin(context)
        return auth_pb2.ListTenantsResponse(tenants=[tenant_message(t) for t in self._store.list_tenants()])

    async def UpdateTenant(self, request, context):
        actor = self._admin(context, request.tenant_id)
        if not request.HasField("serve_successor"):
            raise invalid_request("Nothing to update: give serve_successor.", param="serve_successor")
        try:
            tenant = self._store.update_tenant(request.tenant_id, serve_successor=request.serve_successor)
        except NotFound:
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Tenant {request.tenant_id!r} does not exist",
                           param="tenant_id", code="tenant_not_found") from None
        await self._record(context, actor, "tenant.update", tenant_id=tenant.id,
                           detail=f"serve_successor={str(tenant.serve_successor).lower()}")
        return auth_pb2.UpdateTenantResponse(tenant=tenant_message(tenant))

    async def CreateApiKey(self, request, context):
        actor = self._admin(context, request.tenant_id)
        self._tenant(request.tenant_id)
        now = self._store.now()
        _validate_key_request(request, now)
        record, api_key = self._store.create_key(
            request.tenant_id, request.name.strip() or "default", role=request.role or ROLE_KEY,
            labels=dict(request.labels), allowed_models=tuple(p.strip() for p in request.allowed_models),
            quotas=tuple(Quota(q.window_seconds, q.max_requests, q.max_tokens) for q in request.quotas),
            expires_at=request.expires_at.ToDatetime(tzinfo=UTC) if request.HasField("expires_at") else None,
            rotation_period_days=request.rotation_period_days,
            rotation_grace_seconds=request.rotation_grace_seconds or 86400)
        await self._record(context, actor, "key.create", tenant_id=request.tenant_id, key_id=record.id,
                           detail=f"role={record.role}")
        return auth_pb2.CreateApiKeyResponse(key_id=record.id, api_key=api_key, key=key_message(record, now))

    async def ListApiKeys(self, request, context):
        self._admin(context, request.tenant_id)
        self._tenant(request.tenant_id)
        now = self._store.now()
        return auth_pb2.ListApiKeysResponse(keys=[
            key_message(k, now) for k in self._store.list_keys(request.tenant_id,
                                                                include_revoked=request.include_revoked)])

    async def GetApiKey(self, request, context):
        self._admin(context, request.tenant_id)
        record = self._key_call(self._store.get_key, request.tenant_id, request.key_id)
        return auth_pb2.GetApiKeyResponse(key=key_message(record, self._store.now()))

    async def RotateApiKey(self, request, context):
        actor = self._admin(context, request.tenant_id)
        grace = None
        if request.HasField("grace_seconds"):
            if request.grace_seconds == 0:
                raise invalid_request("grace_seconds must be positive (revoke the key to stop it at once)",
                                      param="grace_seconds", code="invalid_value")
            _check_grace(request.grace_seconds, "grace_seconds")
            grace = timedelta(seconds=request.grace_seconds)
        record, api_key = self._key_call(self._store.rotate_key, request.tenant_id, request.key_id, grace)
        await self._record(context, actor, "key.rotate", tenant_id=request.tenant_id, key_id=record.id)
        return auth_pb2.RotateApiKeyResponse(api_key=api_key, key=key_message(record, self._store.now()))

    async def RetrieveRotatedSecret(self, request, context):
        actor = self._admin(context, request.tenant_id)
        try:
            api_key = self._store.take_rotated_secret(request.tenant_id, request.key_id)
        except NotFound:
            raise ApiError(grpc.StatusCode.NOT_FOUND, "There is no rotated secret waiting for this key (it is "
                           "handed out once).", param="key_id", code="no_rotated_secret") from None
        await self._record(context, actor, "key.rotated_secret_retrieved", tenant_id=request.tenant_id,
                           key_id=request.key_id)
        record = self._store.get_key(request.tenant_id, request.key_id)
        return auth_pb2.RetrieveRotatedSecretResponse(api_key=api_key, key=key_message(record, self._store.now()))

    async def RevokeApiKey(self, request, context):
        actor = self._admin(context, request.tenant_id)
        record = self._key_call(self._store.revoke_key, request.tenant_id, request.key_id)
        await self._record(context, actor, "key.revoke", tenant_id=request.tenant_id, key_id=record.id)
        return auth_pb2.RevokeApiKeyResponse(key=key_message(record, self._store.now()))

    async def ListAuditEvents(self, request, context):
        self._admin(context, request.tenant_id)
        limit = min(request.limit or 100, _MAX_AUDIT_PAGE)
        rows = self._audit.store.list(request.tenant_id, after_seq=min(request.after_seq, _MAX_SEQ), limit=limit,
                                      key_id=request.key_id, action=request.action)
        events = [auth_pb2.AuditEvent(
            seq=r.seq, time=_ts(r.record.at), tenant_id=r.record.tenant_id, key_id=r.record.key_id,
            action=r.record.action, endpoint=r.record.endpoint, model=r.record.model, status=r.record.status,
            prompt_tokens=r.record.prompt_tokens, completion_tokens=r.record.completion_tokens,
            client_address=r.record.client_address, trace_id=r.record.trace_id, request_id=r.record.request_id,
            actor=r.record.actor, detail=r.record.detail, hash=r.hash) for r in rows]
        return auth_pb2.ListAuditEventsResponse(
            events=events, next_after_seq=rows[-1].seq if len(rows) == limit else 0)

    async def VerifyAuditChain(self, request, context):
        actor = self._admin(context)
        if not actor.is_platform_admin:
            raise ApiError(grpc.StatusCode.PERMISSION_DENIED, "Only the platform admin verifies the audit chain",
                           code="permission_denied")
        report = await asyncio.to_thread(self._audit.store.verify)
        metrics.audit_verified(report.ok)
        await self._record(context, actor, "audit.verify", tenant_id="",
                           detail=f"ok={report.ok} checked={report.checked}")
        return auth_pb2.VerifyAuditChainResponse(ok=report.ok, events_checked=report.checked,
                                                 first_bad_seq=report.first_bad_seq, message=report.message)

    async def RecordRequest(self, request, context):
        md = metadata_dict(context)
        signed = md.get(IDENTITY_HEADER)
        if signed is None:
            # Only a service holding the internal secret (the router, forwarding the caller's signed identity).
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "RecordRequest needs a signed identity",
                           code="missing_identity")
        if not request.request_id:
            raise invalid_request("request_id is required", param="request_id")
        [outcome] = await self._record_completions([(request, signed, client_address(md, context))],
                                                   trace_id=current_trace_id())
        if outcome == auth_pb2.RECORD_OUTCOME_REFUSED:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid or expired identity header for this request.",
                           code="invalid_identity")
        return auth_pb2.RecordRequestResponse(recorded=outcome == auth_pb2.RECORD_OUTCOME_RECORDED)

    async def CurrentIdentity(self, request, context):
        """The key's identity and status now (the interceptor checked the caller's signed identity is this key's)."""
        try:
            record = await asyncio.to_thread(self._store.get_key, request.tenant_id, request.key_id)
        except NotFound:
            return auth_pb2.CurrentIdentityResponse(status="revoked")
        status = record.status(self._store.now())
        if status != "active":
            return auth_pb2.CurrentIdentityResponse(status=status)
        return auth_pb2.CurrentIdentityResponse(identity=identity_message(record.identity()), status=status)

    async def StreamCalls(self, request_iterator, context):
        """RecordRequests calls on one stream (llmaas.common.call_stream): each answered as the unary call is."""
        methods = {"RecordRequests": (self.RecordRequests, auth_pb2.RecordRequestsRequest)}
        async for replies in serve_stream(request_iterator, context, auth_pb2.StreamCallsResponse, methods,
                                          "llmaas.auth.v1.AuthInternalService", self._secret):
            yield replies

    async def RecordRequests(self, request, context):
        if len(request.records) > _MAX_RECORDS_PER_CALL:
            raise invalid_request(f"At most {_MAX_RECORDS_PER_CALL} records per call", param="records")
        outcomes = await self._record_completions(
            [(r.record, r.identity, r.client_address[:64]) for r in request.records], linger=True)
        return auth_pb2.RecordRequestsResponse(outcomes=outcomes)

    async def _record_completions(self, entries: list[tuple[auth_pb2.RecordRequestRequest, str, str]], *,
                                  trace_id: str = "", linger: bool = False) -> list[int]:
        """request.completed records, each with its caller's signed identity, written in one transaction (awaited:
        the router retries until they are durable; `linger`: in the audit writer's next round, see
        AuditLog.append_many). A record whose identity does not verify, or is bound to another
        request, is refused alone; one whose request id is already recorded (or repeated here) is skipped."""
        outcomes = [auth_pb2.RECORD_OUTCOME_REFUSED] * len(entries)
        records, positions = [], []
        for i, (request, signed, address) in enumerate(entries):
            record = self._completion(request, signed, address, trace_id)
            if record is not None:
                records.append(record)
                positions.append(i)
        if records:
            for i, seq in zip(positions, await self._audit.append_many(records, linger=linger), strict=True):
                outcomes[i] = auth_pb2.RECORD_OUTCOME_RECORDED if seq is not None \
                    else auth_pb2.RECORD_OUTCOME_DUPLICATE
        return outcomes

    def _completion(self, request: auth_pb2.RecordRequestRequest, signed: str, address: str,
                    trace_id: str) -> AuditRecord | None:
        caller = decode_identity(signed, self._secret)
        # The router signs each record's identity bound to that record's request: a header minted for one request
        # never records another.
        if caller is None or not request.request_id or (caller.request_id and
                                                        caller.request_id != request.request_id):
            return None
        return AuditRecord(
            tenant_id=caller.tenant_id, key_id=caller.key_id, actor=caller.key_id, action=COMPLETED,
            endpoint=request.endpoint[:300], model=request.model[:200], status=request.status,
            prompt_tokens=request.prompt_tokens, completion_tokens=request.completion_tokens,
            client_address=caller.client_address or address, trace_id=request.trace_id or trace_id,
            request_id=request.request_id[:64], detail=request.detail[:300])
