"""OpenAI-shaped errors, carried over gRPC so that Envoy can hand them to REST clients unchanged.

A service raises ApiError; the error interceptor (llmaas.common.server) aborts the RPC with the matching gRPC status
and the OpenAI error JSON in the ASCII trailing metadata key ERROR_METADATA_KEY. Envoy's transcoder maps the status to
the HTTP status and a small Lua filter (gateway/) moves that JSON into the response body. Callers of a service read
the same key back with from_rpc_error, so an error keeps its shape across every hop.
"""

from __future__ import annotations

import json

import grpc

ERROR_METADATA_KEY = "x-llmaas-error"
CLIENT_HEADER_PREFIX = "x-ratelimit-"
# The HTTP status the edge answers with instead of the one the gRPC status maps to (gateway/openai_errors.lua takes
# it off): for the statuses gRPC has no code for, such as a 413.
HTTP_STATUS_HEADER = "x-llmaas-http-status"
CLIENT_HEADERS = frozenset({"retry-after", HTTP_STATUS_HEADER})

# OpenAI's error `type` for each gRPC status we use.
_TYPE_BY_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: "invalid_request_error",
    grpc.StatusCode.NOT_FOUND: "invalid_request_error",
    grpc.StatusCode.FAILED_PRECONDITION: "invalid_request_error",
    grpc.StatusCode.ALREADY_EXISTS: "invalid_request_error",
    grpc.StatusCode.UNAUTHENTICATED: "authentication_error",
    grpc.StatusCode.PERMISSION_DENIED: "permission_error",
    grpc.StatusCode.RESOURCE_EXHAUSTED: "rate_limit_error",
    grpc.StatusCode.UNAVAILABLE: "service_unavailable_error",
    grpc.StatusCode.DEADLINE_EXCEEDED: "timeout_error",
    grpc.StatusCode.CANCELLED: "server_error",
    grpc.StatusCode.INTERNAL: "server_error",
}

# HTTP statuses that match the gRPC codes above (what Envoy's transcoder produces), for bodies written in-band.
HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ApiError(Exception):
    """An error the client should see, with OpenAI's fields."""

    def __init__(
        self,
        status: grpc.StatusCode,
        message: str,
        *,
        type: str | None = None,
        param: str | None = None,
        code: str | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type or _TYPE_BY_STATUS.get(status, "server_error")
        self.param = param
        self.code = code
        # HTTP response headers for the client (a 429's Retry-After and X-RateLimit-*): sent next to the error JSON in
        # the trailing metadata, which Envoy hands to the client as headers (an error before any message is a gRPC
        # trailers-only response).
        self.headers = tuple(h for h in headers if is_client_header(h[0]))

    @property
    def http_status(self) -> int:
        """The status the client sees at the edge: the one asked for in HTTP_STATUS_HEADER, else the gRPC status's."""
        asked = dict(self.headers).get(HTTP_STATUS_HEADER)
        return int(asked) if asked else HTTP_STATUS.get(self.status, 500)

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}

    def body_json(self) -> str:
        # ensure_ascii: gRPC metadata values must be ASCII; JSON escapes keep any text intact.
        return json.dumps(self.body(), ensure_ascii=True, separators=(",", ":"))

    def trailing_metadata(self) -> tuple[tuple[str, str], ...]:
        return ((ERROR_METADATA_KEY, self.body_json()), *self.headers)


def is_client_header(name: str) -> bool:
    """Headers an error may carry to the client across hops (ASCII values only, like all gRPC metadata)."""
    return name in CLIENT_HEADERS or name.startswith(CLIENT_HEADER_PREFIX)


def invalid_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, param=param, code=code)


def payload_too_large(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    """A 413 at the edge (INVALID_ARGUMENT for a gRPC caller): a part of the request past its size limit."""
    return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, param=param, code=code,
                    headers=((HTTP_STATUS_HEADER, "413"),))


def model_unavailable(model: str, retry_after: int, param: str | None = None) -> ApiError:
    """A model whose backend is down or recovering (crashed, reloading): 503 with Retry-After."""
    return ApiError(grpc.StatusCode.UNAVAILABLE,
                    f"The model '{model}' is temporarily unavailable: its backend is recovering. Please retry in "
                    f"{retry_after} s.", param=param, code="model_unavailable",
                    headers=(("retry-after", str(retry_after)),))


def internal_error() -> ApiError:
    # Never leak internals (or prompt text) to the client.
    return ApiError(grpc.StatusCode.INTERNAL, "Internal server error", code="internal_error")


def from_rpc_error(err: grpc.RpcError, *, service: str) -> ApiError:
    """Rebuilds the ApiError a downstream service raised, or a generic one if it did not shape its error."""
    trailing = [(k, v) for k, v in err.trailing_metadata() or () if isinstance(v, str)]
    for key, value in trailing:
        if key == ERROR_METADATA_KEY:
            try:
                e = json.loads(value)["error"]
                return ApiError(err.code(), e["message"], type=e.get("type"), param=e.get("param"), code=e.get("code"),
                                headers=tuple((k, v) for k, v in trailing if is_client_header(k)))
            except (ValueError, KeyError, TypeError):
                break
    code = err.code()
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return ApiError(grpc.StatusCode.UNAVAILABLE, f"The {service} service is temporarily unavailable",
                        code="service_unavailable")
    return internal_error()
