"""llmaas.auth.v1.AuthService: key verification for direct gRPC callers, and the admin operations."""

from __future__ import annotations

import grpc

from llmaas.auth.store import KeyStore, TenantExists
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import require_admin


class AuthServicer(auth_pb2_grpc.AuthServiceServicer):
    def __init__(self, store: KeyStore, admin_token: str) -> None:
        self._store = store
        self._admin_token = admin_token

    async def Authenticate(self, request, context):
        identity = self._store.verify(request.api_key)
        if identity is None:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid API key provided", code="invalid_api_key")
        return auth_pb2.AuthenticateResponse(
            identity=auth_pb2.Identity(tenant_id=identity.tenant_id, key_id=identity.key_id))

    async def CreateTenant(self, request, context):
        require_admin(context, self._admin_token)
        if not request.name.strip():
            raise invalid_request("Tenant name must not be empty", param="name")
        try:
            tenant_id = self._store.create_tenant(request.name.strip())
        except TenantExists:
            raise ApiError(grpc.StatusCode.ALREADY_EXISTS, f"Tenant {request.name!r} already exists",
                           type="invalid_request_error", param="name", code="tenant_exists") from None
        return auth_pb2.CreateTenantResponse(tenant_id=tenant_id)

    async def CreateApiKey(self, request, context):
        require_admin(context, self._admin_token)
        if not self._store.tenant_exists(request.tenant_id):
            raise ApiError(grpc.StatusCode.NOT_FOUND, f"Tenant {request.tenant_id!r} does not exist",
                           param="tenant_id", code="tenant_not_found")
        key_id, api_key = self._store.create_key(request.tenant_id, request.name or "default")
        return auth_pb2.CreateApiKeyResponse(key_id=key_id, api_key=api_key)
