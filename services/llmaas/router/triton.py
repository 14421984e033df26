"""Dispatch to Triton over KServe v2 gRPC with the vLLM backend's tensor contract.

The same code drives GPU Triton with vLLM in production and the CPU repository locally. One TritonReplica per Triton
server; llmaas.router.replicas chooses among them. The model is decoupled, so
even a non-streaming request goes through ModelStreamInfer. Optional inputs are sent only when the model declares
them (Triton rejects unknown inputs), which we learn once per model from its metadata. Triton's spans join ours
through the W3C `traceparent` sent as gRPC metadata.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
from opentelemetry import trace
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.grpc_tracing import sampled_trace_headers
from llmaas.common.triton_client import triton_channel, triton_client
from llmaas.router import kserve
from llmaas.router.kserve import Delta

tracer = trace.get_tracer("llmaas.router.triton")

# A readiness probe that takes longer than this counts as "not ready".
PROBE_TIMEOUT = 1.0
# A stream silent this long gets a canary (is the model's instance still alive?), and again every as long.
WATCHDOG_SECONDS = 2.0
# Triton's Python backend answers "not healthy" about 1 s after its stub died; a busy model takes longer to answer a
# canary, which is then inconclusive.
CANARY_TIMEOUT = 5.0
_OPTIONAL_FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
_OUTPUTS = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")


class ReplicaFailure(Exception):
    """The replica, or the model's instance on it, could not serve: nothing was wrong with the request itself, so
    another replica may serve it. `model_level`: the server answers, the model on it does not (its backend stub
    died, it is unloaded or reloading)."""

    def __init__(self, detail: str, *, model_level: bool) -> None:
        super().__init__(detail)
        self.model_level = model_level


# Error messages that mean the model's instance is gone rather than the request being bad: Triton's Python backend
# when its stub process died, and Triton itself for a model unloaded or not (yet) ready. The vLLM backend's own
# errors about a request start with _REQUEST_ERROR and are never taken for these (a bad request must not eject
# replicas).
_INSTANCE_GONE = ("stub process", "is not healthy", "unknown model", "is not ready", "unavailable", "failed to load")
_REQUEST_ERROR = "error generating stream"


def _instance_gone(message: str) -> bool:
    lowered = message.lower()
    return not lowered.startswith(_REQUEST_ERROR) and any(marker in lowered for marker in _INSTANCE_GONE)


@dataclass
class _Progress:
    last: float  # monotonic time of the last response
    instance_gone: bool = False


class TritonReplica:
    """One Triton server (KServe v2 gRPC): generation with the vLLM contract, and the readiness probes."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._canaries: dict[str, asyncio.Future] = {}
        self._client = triton_client(address)
        # Inference goes straight to the KServe v2 stub (llmaas.router.kserve); probes and metadata through the client.
        self._channel = triton_channel(address)
        self._stub = service_pb2_grpc.GRPCInferenceServiceStub(self._channel)
        # ModelStreamInfer called as a server stream: the one request and the half-close go out with the call's start
        # in one operation (the wire is the same as the bidirectional call's). Triton, told the client has no more
        # requests, still sends every response of the one in flight, then ends the call. A bidirectional call here
        # cost a separate write and half-close per request: about a quarter of the router's CPU in a profile.
        self._stream_infer = self._channel.unary_stream(
            "/inference.GRPCInferenceService/ModelStreamInfer",
            request_serializer=service_pb2.ModelInferRequest.SerializeToString,
            response_deserializer=service_pb2.ModelStreamInferResponse.FromString, _registered_method=True)
        self._inputs: dict[str, frozenset[str]] = {}
        self._outputs: dict[str, frozenset[str]] = {}

    async def _contract(self, model: str) -> tuple[frozenset[str], frozenset[str]]:
        if model not in self._inputs:
            try:
                meta = await self._client.get_model_metadata(model, as_json=True)
            except InferenceServerException as e:
                raise ReplicaFailure(f"metadata: {e.message()}",
                                     model_level=not _transport_failure(e)) from None
            self._inputs[model] = frozenset(i["name"] for i in meta.get("inputs", []))
            self._outputs[model] = frozenset(o["name"] for o in meta.get("outputs", []))
        return self._inputs[model], self._outputs[model]

    async def generate(self, model: str, prompt: str, sampling: dict, request_id: str, *,
                       watchdog: bool = True, whole: bool = False,
                       images: tuple[bytes, ...] = ()) -> AsyncIterator[Delta]:
        """Yields the model's output deltas; the last one has final=True. Cancelling the consumer cancels Triton.
        Raises ReplicaFailure when the replica or the model's instance fails, ApiError for a bad request.
        `watchdog`: a silent stream gets a canary (see _watch). `whole`: the backend's `stream: false`, one final
        response with the whole output and its counts instead of one per token (for a caller that sends nothing
        before the end: a tenth of Triton's and the router's work per token). `images`: a vision model's image files,
        base64-encoded, for the contract's `image` input."""
        declared_inputs, declared_outputs = await self._contract(model)
        flags = {"stream": not whole, "exclude_input_in_output": True,
                 **{name: True for name in _OPTIONAL_FLAGS if name in declared_inputs}}
        outputs = tuple(name for name in _OUTPUTS if name in declared_outputs)
        if "logprobs" in sampling:
            outputs += _logprobs_contract(model, declared_inputs, declared_outputs, flags)
        lists = None
        if images:
            if "image" not in declared_inputs:
                raise invalid_request("This model's backend takes no image input.", param="messages",
                                      code="unsupported_content")
            lists = {"image": list(images)}
        request = kserve.infer_request(
            model, request_id,
            strings={"text_input": prompt.encode(), "sampling_parameters": json.dumps(sampling).encode()},
            flags=flags, outputs=outputs, lists=lists)

        with tracer.start_as_current_span("triton ModelStreamInfer", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("llmaas.triton_model", model)
            span.set_attribute("llmaas.triton_replica", self.address)
            # Triton traces every request that carries a traceparent, sampled or not: only a sampled one gets it.
            headers = sampled_trace_headers()
            # The model is decoupled: its responses come on the stream until the final one.
            stream = self._stream_infer(request, metadata=tuple(headers.items()))
            progress = _Progress(time.monotonic())
            watcher = asyncio.create_task(self._watch(model, stream, progress)) if watchdog else None
            final = False
            try:
                while True:
                    response = await stream.read()
                    if response is grpc.aio.EOF:
                        raise _lost(progress, ReplicaFailure("the stream ended without a final response",
                                                             model_level=False))
                    progress.last = time.monotonic()
                    if response.error_message:
                        message = response.error_message
                        if _instance_gone(message):
                            # The model's instance died or went away: the model's own message names no prompt text.
                            raise ReplicaFailure(message[:200], model_level=True)
                        raise _backend_error(message)
                    delta = kserve.to_delta(response.infer_response)
                    final = delta.final
                    yield delta
                    if final:
                        return
            except grpc.aio.AioRpcError as e:
                raise _lost(progress, ReplicaFailure(f"{e.code().name}: {e.details()}"[:200],
                                                     model_level=False)) from None
            except asyncio.CancelledError:
                # A call cancelled here reads as a cancellation (grpc.aio): the watchdog's, when it found the
                # instance gone, is a failure to fail over from, unless this task is itself being cancelled.
                task = asyncio.current_task()
                if progress.instance_gone and not (task is not None and task.cancelling()):
                    raise _lost(progress, ReplicaFailure("cancelled", model_level=True)) from None
                raise
            finally:
                if watcher is not None:
                    watcher.cancel()
                if not final:
                    stream.cancel()  # the consumer stopped early or it failed: stop generation now

    async def _watch(self, model: str, stream, progress: _Progress) -> None:
        """A response stream silent for WATCHDOG_SECONDS may be waiting in the model's queue, or be lost with a dead
        instance (Triton never ends a request in flight whose Python backend stub died). A canary tells: if the
        instance is gone, the stream is cancelled and the request fails over."""
        checked = 0.0
        while True:
            wait = max(progress.last, checked) + WATCHDOG_SECONDS - time.monotonic()
            if wait > 0:
                await asyncio.sleep(wait)
                continue
            if await self.canary(model) is False:
                progress.instance_gone = True
                stream.cancel()
                return
            checked = time.monotonic()  # alive, or busy: look again after another silent period

    async def canary(self, model: str) -> bool | None:
        """A one-token generation: True the model answers, False its instance is gone (or the replica), None no
        answer in CANARY_TIMEOUT (busy: inconclusive). Concurrent callers share one canary per model."""
        pending = self._canaries.get(model)
        if pending is None:
            pending = asyncio.ensure_future(self._canary(model))
            self._canaries[model] = pending
            pending.add_done_callback(lambda _: self._canaries.pop(model, None))
        return await asyncio.shield(pending)

    async def _canary(self, model: str) -> bool | None:
        async def one_token() -> None:
            async for _ in self.generate(model, " ", {"max_tokens": 1}, f"canary-{time.monotonic_ns()}",
                                         watchdog=False):
                pass

        try:
            await asyncio.wait_for(one_token(), CANARY_TIMEOUT)
            return True
        except ReplicaFailure:
            return False
        except TimeoutError:
            return None
        except ApiError:
            return True  # the model answered (about the canary itself): its instance is alive

    async def infer(self, request, timeout: float, metadata=()):
        """One unary ModelInfer (a model that is not decoupled: embeddings). Raises grpc.aio.AioRpcError."""
        return await self._stub.ModelInfer(request, timeout=timeout, metadata=metadata)

    async def server_ready(self) -> bool:
        try:
            return bool(await self._client.is_server_ready(client_timeout=PROBE_TIMEOUT))
        except InferenceServerException:
            return False

    async def close(self) -> None:
        await self._client.close()
        await self._channel.close()


def _logprobs_contract(model: str, inputs: frozenset[str], outputs: frozenset[str], flags: dict) -> tuple[str, ...]:
    """The vLLM backend's `return_logprobs` flag and `logprobs` output; a model without them cannot honour logprobs."""
    if "return_logprobs" not in inputs or "logprobs" not in outputs:
        raise ApiError(grpc.StatusCode.INVALID_ARGUMENT, "This model does not return logprobs.", param="logprobs",
                       code="unsupported_parameter")
    flags["return_logprobs"] = True
    return ("logprobs",)


def _lost(progress: _Progress, failure: ReplicaFailure) -> ReplicaFailure:
    """The failure to report when a stream ends badly: the watchdog's finding (it cancelled the stream because the
    model's instance is gone) rather than the cancellation it caused."""
    if progress.instance_gone:
        return ReplicaFailure("no response, and the model's instance is gone", model_level=True)
    return failure


def _transport_failure(e: InferenceServerException) -> bool:
    status = (e.status() or "").upper()
    return "UNAVAILABLE" in status or "DEADLINE" in status or "CANCELLED" in status


# How backends say that the prompt does not fit the model's context (in-band, about the request): our CPU backend
# ("Input prompt (N tokens) is too long and exceeds limit of M", as vLLM's scheduler once said), vLLM's engine ("The
# decoder prompt (length N) is longer than the maximum model length of M."), vLLM's OpenAI server ("This model's
# maximum context length is M tokens..."), llama.cpp's server ("exceeds the available context size").
_CONTEXT_MARKERS = ("maximum context length", "maximum model length", "is too long and exceeds limit",
                    "exceeds the available context size", "context length", "context window", "max_model_len")
_STREAM_PREFIX = "error generating stream: "
# vLLM's SamplingParams errors name the key first ("top_p must be in (0, 1], got 0.0."); the CPU backend's say
# "sampling parameter 'x' ...". The router validates every key it sends, so these mean a router/backend mismatch:
# still the request's (400, naming the key), never a 5xx.
_SAMPLING_KEYS = ("max_tokens", "min_tokens", "temperature", "top_p", "top_k", "min_p", "seed", "presence_penalty",
                  "frequency_penalty", "repetition_penalty", "stop", "logprobs", "logit_bias")
_PARAM_ERROR = re.compile(r"^(?:sampling parameter ')?(" + "|".join(_SAMPLING_KEYS) + r")'? (?:must|cannot)")


# The CPU backend's guided decoding errors and vLLM's (xgrammar/outlines) about a schema or grammar.
_GUIDED_MARKERS = ("guided_decoding", "structured_outputs", "xgrammar", "json schema", "json_schema")


def _backend_error(message: str) -> ApiError:
    """In-band errors about the request (bad sampling parameters, context too long). The message is the backend's own
    and carries no prompt text (only counts and parameter names)."""
    text = message.strip()
    if text.lower().startswith(_STREAM_PREFIX):
        text = text[len(_STREAM_PREFIX):]
    lowered = text.lower()
    if any(marker in lowered for marker in _CONTEXT_MARKERS):
        # The first sentence: vLLM goes on with advice for the operator (`max_model_len`), not the client.
        detail = text.split(". ")[0].rstrip(".")[:300]
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"This model's maximum context length was exceeded: {detail}. Please reduce the length of the "
                        f"messages or completion.", param="messages", code="context_length_exceeded")
    if lowered.startswith("the decoder prompt cannot be empty") or lowered.startswith("prompt cannot be empty"):
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, "The prompt is empty.", param="messages",
                        code="invalid_value")
    if any(marker in lowered for marker in _GUIDED_MARKERS):
        # A schema the router's structural check accepts but the backend's grammar compiler cannot enforce.
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT,
                        f"Invalid 'response_format': this model cannot enforce the schema ({text[:300]}).",
                        param="response_format", code="invalid_value")
    if (match := _PARAM_ERROR.match(lowered)) is not None:
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, f"Invalid '{match.group(1)}': {text[:300]}",
                        param=match.group(1), code="invalid_value")
    return ApiError(grpc.StatusCode.INTERNAL, "The model failed to generate a response", code="backend_error")
