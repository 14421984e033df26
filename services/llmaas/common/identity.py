"""Request identity as it travels between services (gRPC metadata keys).

Envoy's ext_authz filter sets these headers after auth has verified the API key, overwriting anything the client
sent, and removes `authorization`. Services behind Envoy read them from the incoming gRPC metadata.
"""

from __future__ import annotations

from dataclasses import dataclass

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
