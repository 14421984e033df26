"""Who is calling, as it travels between services: one signed gRPC metadata entry, `x-llmaas-identity`.

Envoy's ext_authz filter asks auth to verify the client's credential; auth answers with this header (overwriting
anything the client sent) and Envoy removes `authorization`. The header is an HMAC-SHA256-signed token made with
the stack's internal secret, so a caller that reaches a service port directly cannot forge an identity: a missing,
unsigned or tampered header is simply not an identity. It carries what the services behind auth need to enforce
the key's limits without asking auth again: the role, the allowed model patterns, the per-key quotas, and the
tenant's opt-in to being served by a retired model's successor.

The payload is compact JSON; a field at its default is left out ("s", serve_successor, only appears when true).
Every header also binds the request it was minted for (Envoy's request id, the client's address: a service takes
them from here, never from other metadata), names its audience and expires IDENTITY_TTL_SECONDS after it was signed:
a header seen in a log or a trace cannot be replayed for another request, nor for long.
"""

from __future__ import annotations

import fnmatch
import hmac
import time
from dataclasses import dataclass, field

import grpc

from llmaas.common.errors import ApiError
from llmaas.common.signed_token import sign, verified_body

IDENTITY_HEADER = "x-llmaas-identity"
REQUEST_ID_HEADER = "x-request-id"
# The client's address as Envoy saw it, set by ext_authz next to the identity (overwriting the client's).
CLIENT_ADDRESS_HEADER = "x-llmaas-client-address"

# Roles: an application's API key; a tenant administrator's key (manages its own tenant's keys, reads its own
# audit trail, cannot call models); the platform administrator (admin token or SSO).
ROLE_KEY = "key"
ROLE_TENANT_ADMIN = "tenant_admin"
ROLE_PLATFORM_ADMIN = "platform_admin"
_VERSION = "v1"
# Who may accept the header: the llmaas services behind the gateway.
AUDIENCE = "llmaas-services"
# Long enough for the hops of one request (each service checks it when the call arrives), short enough that a leaked
# header is soon worthless. Clocks of the services' machines must agree within a few seconds.
IDENTITY_TTL_SECONDS = 60


@dataclass(frozen=True)
class Quota:
    """A per-key limit over a fixed window (W-second slots aligned to the epoch, enforced by metering); 0 means
    unlimited."""
    window_seconds: int
    max_requests: int = 0
    max_tokens: int = 0


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    key_id: str
    role: str = ROLE_KEY
    # fnmatch patterns over canonical model ids and aliases ("mistral*", "qwen3:*"); empty: every model.
    models: tuple[str, ...] = ()
    quotas: tuple[Quota, ...] = field(default=())
    # The tenant's opt-in: a request for a retired model is served by its recommended successor, saying so.
    serve_successor: bool = False
    # The request the header was minted for (Envoy's x-request-id) and where it came from; empty when not bound.
    request_id: str = ""
    client_address: str = ""

    def may_use(self, *model_names: str) -> bool:
        """True if any of the names (canonical id, the alias the client used) matches an allowed pattern."""
        if not self.models:
            return True
        return any(fnmatch.fnmatchcase(name, pattern) for name in model_names if name for pattern in self.models)

    @property
    def is_platform_admin(self) -> bool:
        return self.role == ROLE_PLATFORM_ADMIN


def encode_identity(identity: Identity, secret: str, *, request_id: str | None = None,
                    client_address: str | None = None, ttl: float = IDENTITY_TTL_SECONDS,
                    now: float | None = None) -> str:
    """The signed header value, bound to a request (by default the identity's own request_id/client_address)."""
    body = {"t": identity.tenant_id, "k": identity.key_id, "r": identity.role, "m": list(identity.models),
            "q": [[q.window_seconds, q.max_requests, q.max_tokens] for q in identity.quotas],
            "a": AUDIENCE, "x": int((time.time() if now is None else now) + ttl)}
    if identity.serve_successor:
        body["s"] = 1
    request_id = identity.request_id if request_id is None else request_id
    client_address = identity.client_address if client_address is None else client_address
    if request_id:
        body["i"] = request_id
    if client_address:
        body["c"] = client_address
    return sign(_VERSION, body, secret)


def decode_identity(value: str, secret: str, *, now: float | None = None) -> Identity | None:
    """The identity in a signed header value; None when it is malformed, its signature does not verify, it is meant
    for another audience or it has expired."""
    body = verified_body(_VERSION, value, secret)
    if body is None:
        return None
    try:
        if body["a"] != AUDIENCE or int(body["x"]) < (time.time() if now is None else now):
            return None
        return Identity(tenant_id=body["t"], key_id=body["k"], role=body["r"], models=tuple(body["m"]),
                        quotas=tuple(Quota(*q) for q in body["q"]), serve_successor=body.get("s") == 1,
                        request_id=str(body.get("i", "")), client_address=str(body.get("c", "")))
    except (ValueError, KeyError, TypeError):
        return None


def metadata_dict(context) -> dict[str, str]:
    """Incoming metadata of a grpc.aio call as a dict (last value wins; keys are lower-case in gRPC)."""
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def identity_from_metadata(md: dict[str, str], secret: str) -> Identity | None:
    """The caller's signed identity; None when there is none. A header that does not verify was forged: it is
    refused (UNAUTHENTICATED), never trusted and never ignored."""
    value = md.get(IDENTITY_HEADER)
    if value is None:
        return None
    identity = decode_identity(value, secret)
    if identity is None:
        raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid or expired identity header.",
                       code="invalid_identity")
    return identity


def client_address(md: dict[str, str], context, identity: Identity | None = None) -> str:
    """Where the request came from: the address bound in the signed identity (ext_authz), else the one it recorded
    next to it, else the gRPC peer (direct callers)."""
    bound = identity.client_address if identity is not None else ""
    return (bound or md.get(CLIENT_ADDRESS_HEADER) or context.peer() or "")[:64]


def bearer_token(header_value: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def is_admin_token(token: str, admin_token: str) -> bool:
    return bool(admin_token) and hmac.compare_digest(token.encode(), admin_token.encode())


PLATFORM_ADMIN = Identity(tenant_id="", key_id="admin-token", role=ROLE_PLATFORM_ADMIN)


def require_admin(context, admin_token: str, secret: str, tenant_id: str = "") -> Identity:
    """Admin RPCs of every service. Allowed: the platform admin token as a bearer (direct gRPC), or a signed identity
    (from ext_authz) of the platform admin, or of a tenant admin when the RPC concerns that tenant (`tenant_id`)."""
    md = metadata_dict(context)
    if is_admin_token(bearer_token(md.get("authorization", "")) or "", admin_token):
        return PLATFORM_ADMIN
    caller = identity_from_metadata(md, secret)
    if caller is None:
        raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "A valid admin token is required", code="invalid_admin_token")
    if caller.is_platform_admin:
        return caller
    if caller.role == ROLE_TENANT_ADMIN and tenant_id and caller.tenant_id == tenant_id:
        return caller
    raise permission_denied("This credential may not perform this administrative action"
                            + (" on this tenant." if tenant_id else "."))


def permission_denied(message: str, param: str | None = None) -> ApiError:
    return ApiError(grpc.StatusCode.PERMISSION_DENIED, message, type="permission_error", param=param,
                    code="permission_denied")
