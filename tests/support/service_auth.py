"""Credentials for tests and benchmarks that call a running stack's internal RPCs directly, as the router (or, for
auth's ext_authz Check, the edge) would: a service token minted from the stack's internal secret, kept in the data
directory's admin.json (llmaas.stack.up), and where the call acts for a tenant the end user's signed identity."""

from __future__ import annotations

import functools
import json
import uuid
from pathlib import Path

from llmaas.common.identity import IDENTITY_HEADER, Identity, encode_identity
from llmaas.common.service_auth import ROUTER, SERVICE_HEADER, mint_service_token
from llmaas.stack.up import ADMIN_FILE


def internal_secret(stack: dict) -> str:
    return _secret(stack["data_dir"])


@functools.cache
def _secret(data_dir: str) -> str:
    return json.loads((Path(data_dir) / ADMIN_FILE).read_text())["internal_secret"]


def service_metadata(stack: dict, audience: str, *, caller: str = ROUTER) -> tuple[tuple[str, str], ...]:
    """gRPC metadata for an internal call to `audience` (auth, catalog, guard, metering) by `caller`."""
    return ((SERVICE_HEADER, mint_service_token(caller, audience, internal_secret(stack))),)


def signed_identity(stack: dict, tenant_id: str, key_id: str = "k", *, request_id: str, **fields) -> str:
    """The end user's identity as ext_authz signs it, bound to `request_id`."""
    return encode_identity(Identity(tenant_id, key_id, **fields), internal_secret(stack), request_id=request_id)


def tenant_metadata(stack: dict, audience: str, tenant_id: str, key_id: str = "k", *, request_id: str,
                    **fields) -> tuple[tuple[str, str], ...]:
    """An internal call acting for a tenant: the router's credential plus the end user's signed identity."""
    return (*service_metadata(stack, audience),
            (IDENTITY_HEADER, signed_identity(stack, tenant_id, key_id, request_id=request_id, **fields)))


def new_request_id() -> str:
    return str(uuid.uuid4())
