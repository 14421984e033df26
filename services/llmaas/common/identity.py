"""Request identity as it travels between services (gRPC metadata keys).

Envoy's ext_authz filter sets these headers after auth has verified the API key, overwriting anything the client
sent, and removes `authorization`. Services behind Envoy read them from the incoming gRPC metadata.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass

import grpc

from llmaas.common.errors import ApiError

TENANT_HEADER = "x-llmaas-tenant-id"
KEY_HEADER = "x-llmaas-key-id"
REQUEST_ID_HEADER = "x-request-id"


@dataclass(frozen=True)
class Identity:
    tenant_id: str
    key_id: str


def metadata_dict(context) -> dict[str, str]:
    """Incoming metadata of a grpc.aio call as a dict (last value wins; keys are lower-case in gRPC)."""
    return {k: v for k, v in (context.invocation_metadata() or ()) if isinstance(v, str)}


def identity_from_metadata(md: dict[str, str]) -> Identity | None:
    tenant, key = md.get(TENANT_HEADER, ""), md.get(KEY_HEADER, "")
    return Identity(tenant, key) if tenant and key else None


def bearer_token(header_value: str) -> str | None:
    """The token of an `Authorization: Bearer <token>` value, else None."""
    scheme, _, token = header_value.strip().partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


def require_admin(context, admin_token: str) -> None:
    """Admin RPCs of every service: the caller's bearer token must be the admin token (constant-time compare)."""
    token = bearer_token(metadata_dict(context).get("authorization", "")) or ""
    if not hmac.compare_digest(token.encode(), admin_token.encode()):
        raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "A valid admin token is required", code="invalid_admin_token")
