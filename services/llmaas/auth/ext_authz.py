"""Envoy's external authorization (envoy.service.auth.v3.Authorization): every REST request is checked here.

Allow: the verified identity is injected as one signed header (overwriting anything the client sent) and
`authorization` is removed, so no service behind Envoy ever sees the secret. Deny: 401 or 403 with an OpenAI-shaped
body; 429 with Retry-After once an address has failed too often (llmaas.auth.abuse: only failures count, so a valid
key is always served, and failures are audited as counts). The attempt's audit record is written behind
(llmaas.auth.audit: durable within its bound; while the writer is behind that bound, Check waits for the record's
commit). Fail closed: when the audit trail cannot take the record (its store failing, its backlog full), a 503
denial with Retry-After; any other error here, or no answer within Envoy's timeout, makes Envoy answer 503 as well.
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from envoy.type.v3 import http_status_pb2
from google.rpc import code_pb2, status_pb2
from opentelemetry import trace

from llmaas.auth import metrics
from llmaas.auth.audit import AuditUnavailable
from llmaas.auth.authorizer import HTTP_STATUS, Attempt, Authorizer, current_trace_id
from llmaas.common.errors import HTTP_STATUS as HTTP_STATUS_BY_GRPC
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
              grpc.StatusCode.PERMISSION_DENIED: code_pb2.PERMISSION_DENIED,
              grpc.StatusCode.RESOURCE_EXHAUSTED: code_pb2.RESOURCE_EXHAUSTED,
              grpc.StatusCode.UNAVAILABLE: code_pb2.UNAVAILABLE}
_HTTP_STATUS = {**HTTP_STATUS, **{s: HTTP_STATUS_BY_GRPC[s] for s in (grpc.StatusCode.RESOURCE_EXHAUSTED,
                                                                        grpc.StatusCode.UNAVAILABLE)}}


def _header(key: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=key, value=value), append_action=_OVERWRITE)


@functools.lru_cache(maxsize=64)
def _denial(err: ApiError) -> external_auth_pb2.CheckResponse:
    """_deny for the authorizer's errors, built once each: they are module constants (keyed by identity), and a
    response is only serialized, never changed. Refusals are the cheap answer to a flood of bad keys."""
    return _deny(err)


def _deny(err: ApiError) -> external_auth_pb2.CheckResponse:
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=_GRPC_CODE.get(err.status, code_pb2.UNAUTHENTICATED)),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status=http_status_pb2.HttpStatus(code=http_status(err)),
            headers=[_header("content-type", "application/json"), *(_header(k, v) for k, v in err.headers)],
            body=err.body_json(),
        ),
    )


def _allow(identity_header: str, client_address: str) -> external_auth_pb2.CheckResponse:
    """The allow answer, filled in place (half the CPU of building it from nested constructors, once per request)."""
    response = external_auth_pb2.CheckResponse()
    response.status.code = code_pb2.OK
    ok = response.ok_response
    for key, value in ((IDENTITY_HEADER, identity_header), (CLIENT_ADDRESS_HEADER, client_address)):
        option = ok.headers.add()
        option.header.key, option.header.value, option.append_action = key, value, _OVERWRITE
    ok.headers_to_remove.append("authorization")
    return response


@dataclass(frozen=True)
class Allowed:
    """The request may go on, carrying these two headers (bound to it: its request id and its client's address)."""
    identity_header: str
    client_address: str


async def decide(authorizer: Authorizer, secret: str, *, method: str, path: str, client_address: str,
                 request_id: str, traceparent: str, authorization: str) -> Allowed | ApiError:
    """The one decision behind both transports (gRPC Check here, HTTP in llmaas.auth.ext_authz_http): an Allowed, or
    the ApiError that becomes the client's answer (an AuditUnavailable among them: fail closed)."""
    path = path.partition("?")[0]  # the query string is not audited: it may carry anything
    attempt = Attempt(endpoint=f"{method} {path}"[:300], client_address=client_address, request_id=request_id,
                      trace_id=current_trace_id(traceparent))
    start = time.perf_counter()
    try:
        decision = await authorizer.authorize(bearer_token(authorization), attempt,
                                              admin_api=path.startswith("/admin/"))
    except AuditUnavailable as err:
        metrics.refused("error", err.code)
        return err
    finally:
        metrics.DECISION_SECONDS.observe(time.perf_counter() - start)
    if isinstance(decision, ApiError):
        metrics.refused("deny", decision.code)
        return decision
    metrics.allowed()
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("llmaas.tenant_id", decision.tenant_id)
        span.set_attribute("llmaas.key_id", decision.key_id)
    # Bound to this request: Envoy's request id (it never passes the client's on) and the client's address.
    return Allowed(encode_identity(decision, secret, request_id=request_id, client_address=client_address),
                   client_address)


def http_status(err: ApiError) -> int:
    """The status a denial gives the client."""
    return _HTTP_STATUS.get(err.status, 401)


class ExtAuthzServicer(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, authorizer: Authorizer, internal_secret: str) -> None:
        self._authorizer = authorizer
        self._secret = internal_secret

    async def Check(self, request: external_auth_pb2.CheckRequest, context) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        headers = http.headers
        outcome = await decide(
            self._authorizer, self._secret, method=http.method, path=http.path,
            client_address=request.attributes.source.address.socket_address.address,
            request_id=headers.get(REQUEST_ID_HEADER, ""), traceparent=headers.get("traceparent", ""),
            authorization=headers.get("authorization", ""))
        if isinstance(outcome, Allowed):
            return _allow(outcome.identity_header, outcome.client_address)
        # The authorizer's refusals are constants, built once; an unavailable audit trail is one of a kind.
        return _deny(outcome) if isinstance(outcome, AuditUnavailable) else _denial(outcome)
