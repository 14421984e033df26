"""Who may call a service's internal RPCs: a signed service credential, checked by one interceptor in the shared
bootstrap (llmaas.common.server), plus the end user's signed identity where the call acts for a tenant.

A calling service presents `x-llmaas-service`: a token naming the caller, the service it is meant for (audience)
and an expiry, HMAC-SHA256-signed with the stack's internal secret (LLMAAS_INTERNAL_SECRET, which every service gets;
the MAC input is prefixed differently from identity headers', so neither can pass for the other). A caller mints
one per audience and reuses it until half its life is gone (ServiceCredentials): no signing per call. The receiving
side remembers the tokens it verified, so a call costs a dictionary lookup and an expiry comparison.

Public services (INTERNAL_CALLERS does not list them) authenticate their end user themselves: an API key, the
admin token or the identity ext_authz signed. Every other service, including any added later and not listed as
public, refuses a call without a valid token from a caller allowed for it (UNAUTHENTICATED; health checks stay
open). Where an internal call acts for a tenant (TENANT_BOUND), the end user's signed identity (x-llmaas-identity,
llmaas.common.identity) must come with it and agree with what the body names; batches whose items carry their own
identities (SettleBatch, RecordRequests) are checked item by item by their servicer (item_identity).

The edge (Envoy) has a token too, for auth's ext_authz Check only: static configuration cannot refresh it, so it is
minted each time Envoy's configuration is rendered (every start) and lives EDGE_TOKEN_TTL_SECONDS. It lets its holder
do what any client of the edge can do already (ask for a key's verification), and the file holding it is the
owner's only.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import grpc

from llmaas.common.errors import ApiError
from llmaas.common.identity import IDENTITY_HEADER, Identity, Quota, decode_identity, identity_from_metadata
from llmaas.common.signed_token import sign, verified_body

SERVICE_HEADER = "x-llmaas-service"
_VERSION = "s1"
# Short-lived: a token seen on the wire is soon worthless. Re-minted by its holder at half its life, so clocks may
# disagree by up to half of it.
SERVICE_TOKEN_TTL_SECONDS = 600
# Envoy's (static configuration): re-minted at each start of Envoy.
EDGE_TOKEN_TTL_SECONDS = 365 * 24 * 3600

ROUTER = "router"
EDGE = "edge"

# The internal services and who may call them. Any service neither here nor in PUBLIC_SERVICES is refused to all.
INTERNAL_CALLERS: dict[str, frozenset[str]] = {
    "llmaas.auth.v1.AuthInternalService": frozenset({ROUTER}),
    "envoy.service.auth.v3.Authorization": frozenset({EDGE}),
    "llmaas.catalog.v1.CatalogInternalService": frozenset({ROUTER}),
    "llmaas.guard.v1.GuardInternalService": frozenset({ROUTER}),
    "llmaas.metering.v1.MeteringInternalService": frozenset({ROUTER}),
}
PUBLIC_SERVICES = frozenset({
    "llmaas.router.v1.RouterService", "llmaas.auth.v1.AuthService", "llmaas.catalog.v1.CatalogService",
    "llmaas.guard.v1.GuardService", "llmaas.metering.v1.MeteringService",
    # Envoy's health checker and the stack's readiness probes; reflection only runs where configured.
    "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection", "grpc.reflection.v1.ServerReflection",
})


def mint_service_token(caller: str, audience: str, secret: str, *, ttl: float = SERVICE_TOKEN_TTL_SECONDS,
                       now: float | None = None) -> str:
    """A token saying `caller` may call `audience` (a service name: auth, catalog, guard, metering) until now+ttl."""
    return sign(_VERSION, {"c": caller, "a": audience, "x": int((time.time() if now is None else now) + ttl)}, secret)


def _read_token(token: str, secret: str) -> tuple[str, str, int] | None:
    """(caller, audience, expiry) of a token whose signature verifies, else None."""
    body = verified_body(_VERSION, token, secret)
    if body is None:
        return None
    try:
        return str(body["c"]), str(body["a"]), int(body["x"])
    except (ValueError, KeyError, TypeError):
        return None


def verify_service_token(token: str, audience: str, secret: str, *, now: float | None = None) -> str | None:
    """The caller a token names, if it verifies, is meant for `audience` and has not expired; else None."""
    read = _read_token(token, secret)
    if read is None:
        return None
    caller, aud, expiry = read
    if aud != audience or expiry < (time.time() if now is None else now):
        return None
    return caller


def token_expiry(metadata, secret: str) -> float:
    """When the service token of a call's metadata expires (0: none that verifies). A long-lived stream is served no
    longer than its opening credential lives (llmaas.common.call_stream)."""
    read = _read_token(_headers(metadata)[0], secret)
    return float(read[2]) if read is not None else 0.0


class ServiceCredentials:
    """A calling service's tokens: one per audience, minted on first use and again once half its life is gone."""

    def __init__(self, caller: str, secret: str, *, ttl: float = SERVICE_TOKEN_TTL_SECONDS,
                 clock: Callable[[], float] = time.time) -> None:
        self._caller, self._secret, self._ttl, self._clock = caller, secret, ttl, clock
        self._minted: dict[str, tuple[float, tuple[tuple[str, str], ...]]] = {}

    def metadata(self, audience: str) -> tuple[tuple[str, str], ...]:
        """gRPC metadata for a call to `audience`."""
        now = self._clock()
        entry = self._minted.get(audience)
        if entry is None or now >= entry[0]:
            token = mint_service_token(self._caller, audience, self._secret, ttl=self._ttl, now=now)
            entry = (now + self._ttl / 2, ((SERVICE_HEADER, token),))
            self._minted[audience] = entry
        return entry[1]


def unauthenticated(message: str, code: str = "invalid_service_credential") -> ApiError:
    return ApiError(grpc.StatusCode.UNAUTHENTICATED, message, code=code)


def identity_mismatch(what: str) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, f"The caller's identity does not match the request's {what}.",
                    type="permission_error", code="identity_mismatch")


# What the end user's identity must agree with, per method that acts for a tenant: the part of the body it
# contradicts, or None.
def _reserve(request, caller: Identity) -> str | None:
    if request.tenant_id != caller.tenant_id or request.key_id != caller.key_id:
        return "tenant or key"
    if request.request_id != caller.request_id:
        return "request id"
    quotas = tuple(Quota(q.window_seconds, q.max_requests, q.max_tokens) for q in request.quotas)
    return None if quotas == caller.quotas else "quotas"


def _tenant_and_key(request, caller: Identity) -> str | None:
    return None if (request.tenant_id, request.key_id) == (caller.tenant_id, caller.key_id) else "tenant or key"


def _request_id(request, caller: Identity) -> str | None:
    return None if request.request_id == caller.request_id else "request id"


def _check_prompt(request, caller: Identity) -> str | None:
    return "tenant" if request.tenant_id != caller.tenant_id else _request_id(request, caller)


def _resolve_model(request, caller: Identity) -> str | None:
    return "serve_successor" if request.serve_successor and not caller.serve_successor else None


TENANT_BOUND: dict[str, Callable[[object, Identity], str | None]] = {
    "/llmaas.metering.v1.MeteringInternalService/Reserve": _reserve,
    "/llmaas.metering.v1.MeteringInternalService/Settle": _request_id,
    "/llmaas.guard.v1.GuardInternalService/CheckPrompt": _check_prompt,
    "/llmaas.catalog.v1.CatalogInternalService/ResolveModel": _resolve_model,
    "/llmaas.auth.v1.AuthInternalService/RecordRequest": _request_id,
    "/llmaas.auth.v1.AuthInternalService/CurrentIdentity": _tenant_and_key,
}


def item_identity(signed: str, secret: str, request_id: str) -> Identity | None:
    """A batch item's identity: signed, unexpired and bound to the item's request id; else None."""
    caller = decode_identity(signed, secret) if signed else None
    if caller is None or not request_id or caller.request_id != request_id:
        return None
    return caller


def _headers(metadata) -> tuple[str, str]:
    """The service token and the identity header of a call's metadata, in one pass ("" when absent)."""
    token = identity = ""
    for k, v in metadata or ():
        if k == SERVICE_HEADER and isinstance(v, str):
            token = v
        elif k == IDENTITY_HEADER and isinstance(v, str):
            identity = v
    return token, identity


class VerifiedTokens:
    """The callers of the service tokens a service was shown for its `audience`, verified once each (each caller
    reuses one token per audience for minutes): bounded, cleared when full; an expired token names no caller."""

    _CACHE_SIZE = 256

    def __init__(self, audience: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._audience, self._secret, self._clock = audience, secret, clock
        self._verified: dict[str, tuple[str, int]] = {}

    def caller(self, token: str) -> str | None:
        if not token:
            return None
        now = self._clock()
        known = self._verified.get(token)
        if known is None:
            read = _read_token(token, self._secret)
            if read is None or read[1] != self._audience:
                return None
            if len(self._verified) >= self._CACHE_SIZE:
                self._verified.clear()
            known = self._verified[token] = (read[0], read[2])
        return known[0] if known[1] >= now else None


class ServiceAuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses a call to an internal service without a valid credential from a caller allowed for it, and a
    tenant-bound call whose end-user identity is missing or names another tenant, key or request than its body.
    Sits inside llmaas.common.server.ErrorInterceptor: a body that disagrees with the identity raises an ApiError from
    the handler's wrapper, which it maps like any other."""

    def __init__(self, audience: str, secret: str, clock: Callable[[], float] = time.time) -> None:
        self._secret = secret
        self._tokens = VerifiedTokens(audience, secret, clock)

    def caller(self, metadata) -> str | None:
        return self._tokens.caller(_headers(metadata)[0])

    async def intercept_service(self, continuation, handler_call_details):
        method = handler_call_details.method
        service = method[1:].rpartition("/")[0]
        if service in PUBLIC_SERVICES:
            return await continuation(handler_call_details)
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        callers = INTERNAL_CALLERS.get(service, frozenset())
        token, signed = _headers(handler_call_details.invocation_metadata)
        if self._tokens.caller(token) not in callers:
            return refusing(handler, unauthenticated(
                "This RPC is internal: it needs a valid service credential of a caller allowed to call it."))
        check = TENANT_BOUND.get(method)
        if check is None:
            return handler
        try:
            caller = identity_from_metadata({IDENTITY_HEADER: signed} if signed else {}, self._secret)
        except ApiError as err:  # forged or expired: UNAUTHENTICATED
            return refusing(handler, err)
        if caller is None:
            return refusing(handler, unauthenticated(
                "This RPC acts for a tenant: it needs the caller's signed identity.", code="missing_identity"))
        return _bound(handler, check, caller)


def refusing(handler, err: ApiError):
    """The handler with its behaviour replaced by the refusal: its status, with the error JSON in trailing metadata
    like every ApiError (aborting here, so that any kind of handler refuses alike)."""
    async def refuse(request, context):
        context.set_trailing_metadata(err.trailing_metadata())
        await context.abort(err.status, err.message)

    async def refuse_stream(request, context):
        await refuse(request, context)
        yield  # never reached; an async generator, like the handler it replaces

    if handler.unary_unary:
        return handler._replace(unary_unary=refuse)
    if handler.unary_stream:
        return handler._replace(unary_stream=refuse_stream)
    if handler.stream_unary:
        return handler._replace(stream_unary=refuse)
    return handler._replace(stream_stream=refuse_stream)


def _bound(handler, check, caller: Identity):
    """The handler, refusing a body that names another tenant, key or request than the caller's identity."""
    if handler.unary_unary:
        behavior = handler.unary_unary

        async def unary(request, context):
            if (disagrees := check(request, caller)) is not None:
                raise identity_mismatch(disagrees)
            return await behavior(request, context)
        return handler._replace(unary_unary=unary)
    behavior = handler.unary_stream

    async def stream(request, context):
        if (disagrees := check(request, caller)) is not None:
            raise identity_mismatch(disagrees)
        async for item in behavior(request, context):
            yield item
    return handler._replace(unary_stream=stream)
