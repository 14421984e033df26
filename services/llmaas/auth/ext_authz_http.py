"""Envoy's external authorization over HTTP (ext_authz `http_service`): the gRPC Check's decision
(llmaas.auth.ext_authz.decide) at a fifth of the transport's cost.

A unary call to grpc.aio's server costs about 0.43 ms of server CPU on this machine before the handler runs; an
HTTP/1.1 request on aiohttp's low-level server, on the same event loop, 0.08 ms (bench/ext_authz.py compares them
through Envoy). Every REST request pays it once, so the edge asks over HTTP (`llmaas up --ext-authz http`, the
default); the gRPC Authorization service stays for an Envoy configured that way.

The contract with Envoy (gateway/envoy.yaml.j2):
- Envoy sends `<PATH_PREFIX><the client's path>` with the client's method, its `authorization` and `x-request-id`,
  its own `traceparent`, and, overwriting any the client sent, the peer address it saw (PEER_HEADER: the gRPC
  Check's source address; X-Forwarded-For is the client's to write) and the edge's service credential in
  `x-llmaas-service` (the gRPC Check's metadata): no other caller may ask.
- Allow: 200 with the signed identity and the client address (Envoy overwrites any the client sent) and
  `x-envoy-auth-headers-to-remove: authorization`, so no service behind Envoy sees the secret.
- Deny: the status, OpenAI-shaped JSON body and headers (Retry-After, ...) the client gets, as the gRPC denial;
  but Envoy takes any 5xx from the authorization server for its failure (its own 503 body, auth's lost), so auth's
  own 503 (the audit trail cannot take the record) goes as UNAVAILABLE_STATUS, which the edge turns back into 503.
- Anything else fails closed: an unexpected error here is a 503 with the platform's own body; no answer within
  Envoy's timeout is Envoy's 503.
GET HEALTH_PATH answers Envoy's health checks (503 once the service drains, and checks go on being answered for
DRAIN_SECONDS, on connections closed after each answer, so Envoy has moved on before the port closes). Outside
PATH_PREFIX nothing is allowed, so a client's own path can never reach the health check.

One difference from the gRPC Check: a request HTTP/1.1's parser refuses (a method it does not know, which HTTP/2
clients can send) is a 400 from aiohttp before any decision, so it is neither audited nor counted as a failed
authentication; it is never a pass, and no route serves such a method.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time

import grpc
from aiohttp import web
from opentelemetry import trace

from llmaas.auth.audit import AuditUnavailable
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.ext_authz import Allowed, decide, http_status
from llmaas.common.errors import ApiError
from llmaas.common.grpc_tracing import TRACEPARENT, UnsampledContext, parse_traceparent
from llmaas.common.identity import CLIENT_ADDRESS_HEADER, IDENTITY_HEADER, REQUEST_ID_HEADER
from llmaas.common.service_auth import EDGE, SERVICE_HEADER, VerifiedTokens

log = logging.getLogger("llmaas.auth")
tracer = trace.get_tracer("llmaas.auth")

PATH_PREFIX = "/ext_authz"
HEALTH_PATH = "/healthz"
# Envoy's HTTP ext_authz removes the original request's headers this response header lists.
HEADERS_TO_REMOVE = "x-envoy-auth-headers-to-remove"
PEER_HEADER = "x-llmaas-downstream-address"
# "Failed Dependency": auth's 503 on the way to Envoy (gateway/envoy.yaml.j2 maps it back); auth sends it for nothing
# else.
UNAVAILABLE_STATUS = 424
# The gRPC Check's span name, so a trace reads the same whichever transport the edge uses.
SPAN_NAME = "envoy.service.auth.v3.Authorization/Check"
# The edge accepts 32 KiB of request headers in all (llmaas.stack.envoy.MAX_REQUEST_HEADERS_KB): one may be that long,
# and the request line carries the prefix and the method besides.
MAX_HEADER_BYTES = 33 * 1024
# How long an idle connection from Envoy stays open (Envoy closes its own at half of it: gateway/envoy.yaml.j2).
KEEPALIVE_SECONDS = 120
# How long a draining replica keeps answering after its health check fails: two of Envoy's health-check intervals,
# so Envoy has taken it out of the rotation before it stops listening.
DRAIN_SECONDS = 2.0
_JSON = "application/json"
# What a caller other than the edge, or a failure here, gets (Envoy answers its own 503 to the client).
_UNAVAILABLE = ApiError(grpc.StatusCode.UNAVAILABLE, "The service is temporarily unavailable. Please retry.",
                        code="service_unavailable").body_json()


def _denial_parts(err: ApiError) -> tuple[int, tuple[tuple[str, str], ...], bytes]:
    """A refusal's status (auth's own 503 as UNAVAILABLE_STATUS), headers and body."""
    status = http_status(err)
    return (UNAVAILABLE_STATUS if status == 503 else status, (("content-type", _JSON), *err.headers),
            err.body_json().encode())


# Built once per authorizer constant (as the gRPC denials are).
_constant_denial = functools.lru_cache(maxsize=64)(_denial_parts)


def _denied(err: ApiError) -> web.Response:
    # The authorizer's refusals are constants; an unavailable audit trail is one of a kind.
    status, headers, body = (_denial_parts if isinstance(err, AuditUnavailable) else _constant_denial)(err)
    return web.Response(status=status, headers=headers, body=body)


class ExtAuthzHttpServer:
    def __init__(self, authorizer: Authorizer, secret: str) -> None:
        self._authorizer, self._secret = authorizer, secret
        self._tokens = VerifiedTokens("auth", secret)
        self._serving = False
        self._drained_at: float | None = None
        self._listener: asyncio.AbstractServer | None = None
        self._handler: web.Server | None = None

    async def start(self, host: str, port: int) -> None:
        handler = web.Server(self.handle, access_log=None, max_line_size=MAX_HEADER_BYTES,
                             max_field_size=MAX_HEADER_BYTES, keepalive_timeout=KEEPALIVE_SECONDS)
        self._handler = handler
        self._listener = await asyncio.get_running_loop().create_server(handler, host, port, reuse_address=True)
        self._serving = True
        log.info("ext_authz over HTTP", extra={"fields": {"address": f"{host}:{port}"}})

    @property
    def port(self) -> int:
        """The port it listens on (the one asked for, or the one the system chose for 0)."""
        return self._listener.sockets[0].getsockname()[1]

    def drain(self) -> None:
        """Health checks fail from now on (Envoy takes the replica out of the rotation); requests are still answered,
        each on a connection closed after it, until close()."""
        self._serving = False
        self._drained_at = time.monotonic()

    async def close(self) -> None:
        """Stops listening, once Envoy has seen the failing health check (DRAIN_SECONDS after drain())."""
        if self._drained_at is not None:
            await asyncio.sleep(max(0.0, self._drained_at + DRAIN_SECONDS - time.monotonic()))
        if self._listener is not None:
            self._listener.close()
            await self._handler.shutdown(1.0)
            await self._listener.wait_closed()

    async def handle(self, request: web.BaseRequest) -> web.Response:
        response = await self._answer(request)
        if not self._serving:
            response.force_close()  # draining: Envoy's next check opens a connection to a replica in the rotation
        return response

    async def _answer(self, request: web.BaseRequest) -> web.Response:
        path = request.raw_path
        if not path.startswith(PATH_PREFIX + "/"):
            if path == HEALTH_PATH and request.method == "GET":
                return web.Response(status=200 if self._serving else 503)
            return web.Response(status=404)
        headers = request.headers
        if self._tokens.caller(headers.get(SERVICE_HEADER, "")) != EDGE:
            log.error("ext_authz request without the edge's credential")
            return web.Response(status=503, content_type=_JSON, text=_UNAVAILABLE)
        traceparent = headers.get(TRACEPARENT, "")
        parent = parse_traceparent(traceparent)
        try:
            if parent is not None and not parent.trace_flags.sampled:
                with UnsampledContext(parent):  # not sampled (most requests): as on the gRPC path
                    return await self._check(request, path, traceparent)
            parent_context = trace.set_span_in_context(trace.NonRecordingSpan(parent)) if parent else None
            with tracer.start_as_current_span(SPAN_NAME, context=parent_context, kind=trace.SpanKind.SERVER):
                return await self._check(request, path, traceparent)
        except Exception as e:  # fail closed, in the platform's words (never a stack trace for the client)
            log.error("ext_authz failed", extra={"fields": {"error": type(e).__name__}})
            return web.Response(status=503, content_type=_JSON, text=_UNAVAILABLE)

    async def _check(self, request: web.BaseRequest, path: str, traceparent: str) -> web.Response:
        headers = request.headers
        outcome = await decide(
            self._authorizer, self._secret, method=request.method, path=path[len(PATH_PREFIX):],
            client_address=headers.get(PEER_HEADER, "")[:64],
            request_id=headers.get(REQUEST_ID_HEADER, ""), traceparent=traceparent,
            authorization=headers.get("authorization", ""))
        if isinstance(outcome, Allowed):
            return web.Response(status=200, headers={
                IDENTITY_HEADER: outcome.identity_header, CLIENT_ADDRESS_HEADER: outcome.client_address,
                HEADERS_TO_REMOVE: "authorization"})
        return _denied(outcome)
