"""Dispatch to Triton over KServe v2 gRPC with the vLLM backend's tensor contract.

The same code drives GPU Triton with vLLM in production and the CPU repository locally. The model is decoupled, so
even a non-streaming request goes through ModelStreamInfer. Optional inputs are sent only when the model declares
them (Triton rejects unknown inputs), which we learn once per model from its metadata. Triton's spans join ours
through the W3C `traceparent` sent as gRPC metadata.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import numpy as np
import tritonclient.grpc.aio as triton_aio
from opentelemetry import propagate, trace
from tritonclient.grpc import InferInput, InferRequestedOutput
from tritonclient.utils import InferenceServerException

from llmaas.common.errors import ApiError

tracer = trace.get_tracer("llmaas.router.triton")

_OPTIONAL_FLAGS = ("return_finish_reason", "return_num_input_tokens", "return_num_output_tokens")
_OUTPUTS = ("text_output", "finish_reason", "num_input_tokens", "num_output_tokens")


@dataclass(frozen=True)
class Delta:
    text: str
    finish_reason: str | None
    # Prompt tokens (reported on every response by the vLLM backend) and this response's new output tokens.
    input_tokens: int | None
    output_tokens: int | None
    final: bool


def _bool_input(name: str, value: bool) -> InferInput:
    t = InferInput(name, [1], "BOOL")
    t.set_data_from_numpy(np.array([value], dtype=bool))
    return t


def _bytes_input(name: str, value: str) -> InferInput:
    t = InferInput(name, [1], "BYTES")
    t.set_data_from_numpy(np.array([value.encode()], dtype=np.object_))
    return t


def backend_unavailable() -> ApiError:
    return ApiError(grpc.StatusCode.UNAVAILABLE, "The inference backend is temporarily unavailable",
                    code="backend_unavailable")


class TritonDispatcher:
    def __init__(self, url: str) -> None:
        self._client = triton_aio.InferenceServerClient(url=url)
        self._inputs: dict[str, frozenset[str]] = {}
        self._outputs: dict[str, frozenset[str]] = {}

    async def _contract(self, model: str) -> tuple[frozenset[str], frozenset[str]]:
        if model not in self._inputs:
            try:
                meta = await self._client.get_model_metadata(model, as_json=True)
            except InferenceServerException:
                raise backend_unavailable() from None
            self._inputs[model] = frozenset(i["name"] for i in meta.get("inputs", []))
            self._outputs[model] = frozenset(o["name"] for o in meta.get("outputs", []))
        return self._inputs[model], self._outputs[model]

    async def generate(self, model: str, prompt: str, sampling: dict, request_id: str) -> AsyncIterator[Delta]:
        """Yields the model's output deltas; the last one has final=True. Cancelling the consumer cancels Triton."""
        declared_inputs, declared_outputs = await self._contract(model)
        inputs = [_bytes_input("text_input", prompt), _bool_input("stream", True),
                  _bytes_input("sampling_parameters", json.dumps(sampling)),
                  _bool_input("exclude_input_in_output", True)]
        inputs += [_bool_input(name, True) for name in _OPTIONAL_FLAGS if name in declared_inputs]
        outputs = [InferRequestedOutput(name) for name in _OUTPUTS if name in declared_outputs]
        done = asyncio.Event()

        async def requests():
            yield {"model_name": model, "inputs": inputs, "outputs": outputs, "request_id": request_id,
                   "enable_empty_final_response": True}
            await done.wait()  # keep the stream open until the final response has arrived

        with tracer.start_as_current_span("triton ModelStreamInfer", kind=trace.SpanKind.CLIENT) as span:
            span.set_attribute("llmaas.triton_model", model)
            headers: dict[str, str] = {}
            propagate.inject(headers)
            stream = self._client.stream_infer(requests(), headers=headers)
            try:
                async for result, error in stream:
                    if error is not None:
                        raise _backend_error(error)
                    delta = _to_delta(result)
                    yield delta
                    if delta.final:
                        return
                raise backend_unavailable()  # the stream ended without a final response
            except grpc.aio.AioRpcError:
                raise backend_unavailable() from None
            finally:
                done.set()
                stream.cancel()  # after the final response a no-op for Triton; otherwise it stops generation now

    async def close(self) -> None:
        await self._client.close()


def _backend_error(error: InferenceServerException) -> ApiError:
    # In-band errors from the model (bad sampling parameters, context too long). The message is the backend's own and
    # carries no prompt text.
    message = error.message() or "The model failed to generate a response"
    if "context" in message.lower() and "length" in message.lower():
        return ApiError(grpc.StatusCode.INVALID_ARGUMENT, message, param="messages", code="context_length_exceeded")
    return ApiError(grpc.StatusCode.INTERNAL, "The model failed to generate a response", code="backend_error")


def _scalar(result, name: str):
    try:
        arr = result.as_numpy(name)
    except Exception:  # output absent from this response
        return None
    if arr is None or arr.size == 0:
        return None
    return arr.reshape(-1)[0]


def _to_delta(result) -> Delta:
    response = result.get_response()
    final = response.parameters["triton_final_response"].bool_param if "triton_final_response" in \
        response.parameters else False
    text = _scalar(result, "text_output")
    reason = _scalar(result, "finish_reason")
    n_in = _scalar(result, "num_input_tokens")
    n_out = _scalar(result, "num_output_tokens")
    reason_str = reason.decode() if isinstance(reason, bytes) else None
    if reason_str == "None":  # the vLLM backend sends str(None) until the last response
        reason_str = None
    return Delta(
        text=text.decode("utf-8", errors="replace") if isinstance(text, bytes) else "",
        finish_reason=reason_str or None,
        input_tokens=int(n_in) if n_in is not None else None,
        output_tokens=int(n_out) if n_out is not None else None,
        final=final,
    )
