"""One unary Triton call (a model that is not decoupled: embeddings, rerank, speech to text) through the router's
replica pool (llmaas.router.replicas): the replica in rotation with the fewest outstanding requests, another one when
a replica (not the request) fails, the failed replica or model instance out of rotation and reported to the catalog.

A failure is the replica's when it could not take the request at all (unreachable, the model's instance gone or not
loaded there); any other error is the request's, and retrying it elsewhere would only fail again.
"""

from __future__ import annotations

import time

import grpc
from opentelemetry import trace
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request, model_unavailable
from llmaas.common.grpc_tracing import sampled_trace_headers
from llmaas.router.replicas import MAX_ATTEMPTS, ReplicaPool
from llmaas.router.triton import ReplicaFailure, _instance_gone

tracer = trace.get_tracer("llmaas.router.unary")

# Backend messages that mean an input was over the model's context (our CPU models, vLLM, TEI).
_CONTEXT_MARKERS = ("maximum context length", "too long", "max_model_len", "maximum sequence length")


def backend_error(e: grpc.aio.AioRpcError, failed: str = "The model failed on the input.") -> ApiError | ReplicaFailure:
    """The replica's failure (retried on another replica) or the request's error (`failed`: its message)."""
    message = e.details() or ""
    if e.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return ReplicaFailure(f"{e.code().name}: {message}"[:200], model_level=False)
    if _instance_gone(message):
        return ReplicaFailure(message[:200], model_level=True)
    if any(m in message.lower() for m in _CONTEXT_MARKERS):
        # The backend's own words carry counts only ("input 3 has 300 tokens, more than ... of 256"), no text.
        return invalid_request(f"This model's maximum context length was exceeded: {message[:300]}. Please reduce "
                               f"the length of the input.", param="input", code="context_length_exceeded")
    return ApiError(grpc.StatusCode.INTERNAL, failed, code="backend_error")


async def call_triton(pool: ReplicaPool, model, request: service_pb2.ModelInferRequest, *, timeout: float,
                      failed: str = "The model failed on the input.",
                      slow_is_request: bool = False) -> service_pb2.ModelInferResponse:
    """`request` answered by one of `model.endpoints`, failing over while a replica fails (at most MAX_ATTEMPTS);
    none in rotation: a 503 `model_unavailable` with Retry-After. `slow_is_request`: for a model whose requests can
    queue long behind each other (one instance, seconds per request), running past `timeout` is a 504 for this
    request, not a failed replica (which would take every model there out of rotation and run it again elsewhere)."""
    triton_model = model.triton_model
    tried: set[str] = set()
    while True:
        address = pool.pick(model.endpoints, triton_model, tried) if len(tried) < MAX_ATTEMPTS else None
        if address is None:
            raise model_unavailable(model.id, pool.retry_after(model.endpoints, triton_model))
        tried.add(address)
        with tracer.start_as_current_span("triton ModelInfer", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("llmaas.triton_model", triton_model)
            span.set_attribute("llmaas.triton_replica", address)
            span.set_attribute("llmaas.attempt", len(tried) - 1)
            started = time.perf_counter()
            try:
                response = await pool.infer(address, request, timeout, tuple(sampled_trace_headers().items()))
            except grpc.aio.AioRpcError as e:
                if slow_is_request and e.code() == grpc.StatusCode.DEADLINE_EXCEEDED:
                    raise ApiError(grpc.StatusCode.DEADLINE_EXCEEDED, f"The model did not answer within {timeout:g} s "
                                   "(it is busy): retry later.", code="timeout") from None
                failure = backend_error(e, failed)
                if isinstance(failure, ApiError):
                    raise failure from None
                pool.report_failure(address, triton_model, failure)
                continue
            span.set_attribute("llmaas.backend_ms", round((time.perf_counter() - started) * 1000, 2))
        return response
