"""Envoy's external authorization (envoy.service.auth.v3.Authorization): every REST request is checked here.

Allow: the verified identity is injected as headers (overwriting anything the client sent) and `authorization` is
removed, so no service behind Envoy ever sees the secret. Deny: 401 with an OpenAI-shaped body.
"""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from llmaas.auth.store import KeyStore
from llmaas.common.errors import ApiError
from llmaas.common.identity import KEY_HEADER, TENANT_HEADER, bearer_token

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD

_MISSING = ApiError(
    grpc.StatusCode.UNAUTHENTICATED,
    "You didn't provide an API key. You need to provide your API key in an Authorization header using Bearer auth "
    "(i.e. Authorization: Bearer YOUR_KEY).",
    code="missing_api_key",
)
_INVALID = ApiError(grpc.StatusCode.UNAUTHENTICATED, "Invalid API key provided", code="invalid_api_key")


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _deny(err: ApiError) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code_pb2.UNAUTHENTICATED),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status_pb2.Unauthorized),
            headers=[_header("content-type", "application/json")],
            body=err.body_json(),
        ),
    )


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, store: KeyStore) -> None:
        self._store = store

    async def Check(self, request: external_auth_pb2.CheckRequest, context) -> external_auth_pb2.CheckResponse:
        headers = request.attributes.request.http.headers
        authorization = headers.get("authorization", "")
        if not authorization:
            return _deny(_MISSING)
        token = bearer_token(authorization)
        identity = self._store.verify(token) if token else None
        if identity is None:
            return _deny(_INVALID)
        span = trace.get_current_span()
        span.set_attribute("llmaas.tenant_id", identity.tenant_id)
        span.set_attribute("llmaas.key_id", identity.key_id)
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(TENANT_HEADER, identity.tenant_id), _header(KEY_HEADER, identity.key_id)],
                headers_to_remove=["authorization"],
            ),
        )
