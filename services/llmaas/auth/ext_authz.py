"""Envoy's external authorization (envoy.service.auth.v3.Authorization): every REST request is checked here.

Allow: the verified identity is injected as one signed header (overwriting anything the client sent) and
`authorization` is removed, so no service behind Envoy ever sees the secret. Deny: 401 or 403 with an OpenAI-shaped
body. An error here (the audit store down, say) makes Envoy answer 503: fail closed.
"""

from __future__ import annotations

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from llmaas.auth.authorizer import HTTP_STATUS, Attempt, Authorizer, current_trace_id
from llmaas.common.errors import ApiError
from llmaas.common.identity import (
    CLIENT_ADDRESS_HEADER,
    IDENTITY_HEADER,
    REQUEST_ID_HEADER,
    bearer_token,
    encode_identity,
)

_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD
_GRPC_CODE = {grpc.StatusCode.UNAUTHENTICATED: code_pb2.UNAUTHENTICATED,
              grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED}


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


def _deny(err: ApiError) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE.get(err.status, code_pb2.UNAUTHENTICATED)),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=HTTP_STATUS.get(err.status, 401)),
            headers=[_header("content-type", "application/json")],
            body=err.body_json(),
        ),
    )


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, authorizer: Authorizer, internal_secret: str) -> None:
        self._authorizer = authorizer
        self._secret = internal_secret

    async def Check(self, request: external_auth_pb2.CheckRequest, context) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        headers = http.headers
        path = http.path.partition("?")[0]  # the query string is not audited: it may carry anything
        attempt = Attempt(
            endpoint=f"{http.method} {path}"[:300],
            client_address=request.attributes.source.address.socket_address.address,
            request_id=headers.get(REQUEST_ID_HEADER, ""),
            trace_id=current_trace_id(headers.get("traceparent", "")))
        token = bearer_token(headers.get("authorization", ""))
        decision = await self._authorizer.authorize(token, attempt, admin_api=path.startswith("/admin/"))
        if isinstance(decision, ApiError):
            return _deny(decision)
        span = trace.get_current_span()
        span.set_attribute("llmaas.tenant_id", decision.tenant_id)
        span.set_attribute("llmaas.key_id", decision.key_id)
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                # Bound to this request: Envoy's request id (it never passes the client's on) and the client's address.
                headers=[_header(IDENTITY_HEADER, encode_identity(decision, self._secret,
                                                                  request_id=attempt.request_id,
                                                                  client_address=attempt.client_address)),
                         _header(CLIENT_ADDRESS_HEADER, attempt.client_address)],
                headers_to_remove=["authorization"],
            ),
        )
