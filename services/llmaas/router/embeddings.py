"""POST /v1/embeddings: one request, from validated input to settled usage, on the chat pipeline's machinery (the
caller's identity, the model's resolution and permission, metering's reservation and batched settlement, the audit
record) with the embedding contract of deploy/triton/model_repository/all-minilm-l6-v2 (every input of a request in
one Triton call).

The guard does not apply: it judges whether text steers a model that follows instructions, and an embedding model
follows none (its output is a vector, never text the platform acts on). Documents meant for a chat model are guarded
when they reach one.
"""

from __future__ import annotations

import asyncio
import base64
import json
import struct

import grpc
import numpy as np
from google.protobuf import struct_pb2
from opentelemetry import trace
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import metadata_dict
from llmaas.metering.v1 import metering_pb2
from llmaas.router.embedding_input import EmbeddingParams, decode_tokens, parse_input, parse_options
from llmaas.router.pipeline import ChatPipeline, Usage, check_model_permission, lifecycle_headers
from llmaas.router.unary import call_triton
from llmaas.router.v1 import router_pb2

tracer = trace.get_tracer("llmaas.router.embeddings")

REST_EMBEDDINGS = "POST /v1/embeddings"
GRPC_EMBEDDINGS = "grpc llmaas.router.v1.RouterService/CreateEmbedding"
# One Triton call embeds every input of a request: 2048 short inputs take ~25 s on two CPU cores.
INFER_TIMEOUT = 120.0
# Larger answers (numbers) are written to JSON off the event loop.
INLINE_JSON_VALUES = 4096
# More token ids than this are decoded off the event loop.
INLINE_DECODE_IDS = 2000


class _Run:
    """What the chat pipeline's settlement needs (request id, caller, usage)."""

    def __init__(self, caller, request_id: str) -> None:
        self.caller, self.request_id, self.usage = caller, request_id, Usage()


async def parse_embedding_request(request: router_pb2.CreateEmbeddingRequest) -> EmbeddingParams:
    if not request.model:
        raise invalid_request("'model' is required.", param="model", code="missing_required_parameter")
    texts, arrays = parse_input(request.input)
    encoding_format, dimensions = parse_options(request)
    if arrays is not None:
        ids = sum(len(a) for a in arrays)
        texts = decode_tokens(arrays) if ids <= INLINE_DECODE_IDS else await asyncio.to_thread(decode_tokens, arrays)
    return EmbeddingParams(request.model, tuple(texts), encoding_format, dimensions, request.user,
                           from_tokens=arrays is not None)


def infer_request(model: str, request_id: str, texts: tuple[str, ...]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="text_input", datatype="BYTES", shape=[len(texts)])
    request.raw_input_contents.append(b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts)))
    request.outputs.add(name="embedding")
    request.outputs.add(name="num_input_tokens")
    return request


def read_response(response: service_pb2.ModelInferResponse, n: int) -> tuple[np.ndarray, list[int]]:
    raw = {t.name: (t, response.raw_output_contents[i]) for i, t in enumerate(response.outputs)}
    tensor, data = raw["embedding"]
    vectors = np.frombuffer(data, dtype="<f4").reshape(tuple(tensor.shape))
    tensor, data = raw["num_input_tokens"]
    tokens = np.frombuffer(data, dtype="<i4" if tensor.datatype == "INT32" else "<i8").tolist()
    if vectors.shape[0] != n or len(tokens) != n:
        raise ApiError(grpc.StatusCode.INTERNAL, "The model returned a malformed response.", code="backend_error")
    return vectors, tokens


def shorten(vectors: np.ndarray, dimensions: int | None) -> np.ndarray:
    """OpenAI's `dimensions` for a Matryoshka model: the first `dimensions` values, normalised again."""
    if dimensions is None or dimensions >= vectors.shape[1]:
        return vectors
    cut = vectors[:, :dimensions]
    return cut / np.maximum(np.linalg.norm(cut, axis=1, keepdims=True), 1e-12)


# A ListValue of numbers on the wire: per element, field 1 (Value, length 9) holding field 2 (double, 8 bytes).
_NUMBER_ELEMENT = np.dtype([("value_tag", "u1"), ("value_len", "u1"), ("number_tag", "u1"), ("number", "<f8")])


def number_lists(vectors: np.ndarray) -> list[struct_pb2.Value]:
    """Each row as a Value holding a list of numbers, written as protobuf bytes by numpy and parsed by the C runtime:
    building 64 x 384 Value messages one by one in Python held the event loop for ~26 ms (this: ~5 ms)."""
    elements = np.empty(vectors.shape, dtype=_NUMBER_ELEMENT)
    elements["value_tag"], elements["value_len"], elements["number_tag"] = 0x0A, 9, 0x11
    elements["number"] = vectors
    values = []
    for row in elements:
        value = struct_pb2.Value()
        value.list_value.MergeFromString(row.tobytes())
        values.append(value)
    return values


def response_body(model: str, vectors: np.ndarray, tokens: int, encoding_format: str):
    if encoding_format == "base64":
        values = [struct_pb2.Value(string_value=_base64(row)) for row in vectors]
    else:
        values = number_lists(vectors)
    data = [router_pb2.Embedding(object="embedding", index=i, embedding=value) for i, value in enumerate(values)]
    return router_pb2.CreateEmbeddingResponse(
        object="list", data=data, model=model,
        usage=router_pb2.EmbeddingUsage(prompt_tokens=tokens, total_tokens=tokens))


def _base64(row: np.ndarray) -> str:
    return base64.b64encode(row.astype("<f4").tobytes()).decode()


def json_body(model: str, vectors: np.ndarray, tokens: int, encoding_format: str) -> bytes:
    """OpenAI's JSON, written directly (each float32 as the double it converts to: it reads back exactly)."""
    rows = [_base64(row) for row in vectors] if encoding_format == "base64" else vectors.tolist()
    return json.dumps({"object": "list", "data": [{"object": "embedding", "index": i, "embedding": row}
                                                  for i, row in enumerate(rows)],
                       "model": model, "usage": {"prompt_tokens": tokens, "total_tokens": tokens}},
                      separators=(",", ":")).encode()


class EmbeddingService:
    def __init__(self, pipeline: ChatPipeline) -> None:
        self._pipeline = pipeline
        self._downstream = pipeline._downstream
        self._replicas = pipeline._replicas

    async def create(self, request, context, endpoint: str = GRPC_EMBEDDINGS) -> router_pb2.CreateEmbeddingResponse:
        """The typed answer (gRPC callers)."""
        model_id, params, vectors, tokens = await self._serve(request, context, endpoint)
        return response_body(model_id, vectors, tokens, params.encoding_format)

    async def create_json(self, request, context, endpoint: str = REST_EMBEDDINGS) -> bytes:
        """OpenAI's JSON body (REST through Envoy)."""
        model_id, params, vectors, tokens = await self._serve(request, context, endpoint)
        if vectors.size <= INLINE_JSON_VALUES:
            return json_body(model_id, vectors, tokens, params.encoding_format)
        # ~17 ms for 64 x 384 floats: in a thread, so that the event loop keeps serving others meanwhile.
        return await asyncio.to_thread(json_body, model_id, vectors, tokens, params.encoding_format)

    async def _serve(self, request, context, endpoint: str):
        pipeline = self._pipeline
        caller = await pipeline._caller(metadata_dict(context), context, endpoint)
        run, model_id, status = _Run(caller, caller.request_id), "", 200
        reserved = None
        try:
            params = await parse_embedding_request(request)
            model = await self._resolve(params, caller)
            model_id = model.id
            try:
                reserved = await self._reserve(params, model, caller)
            except asyncio.CancelledError:
                # The client left while metering was granting: release whatever it granted (as chat does).
                pipeline._settle(run, "cancelled")
                raise
            try:
                vectors, tokens = await self._infer(model, params, caller.request_id)
            except BaseException:
                pipeline._settle(run, "rejected")  # nothing embedded: nothing billed
                raise
            run.usage.prompt_tokens = sum(tokens)
            pipeline._settle(run, "completed")
            trace.get_current_span().set_attribute("llmaas.prompt_tokens", run.usage.prompt_tokens)
        except ApiError as err:
            pipeline._record(caller, model_id, run.usage, err)
            raise
        except asyncio.CancelledError:
            status = 499
            pipeline._record(caller, model_id, run.usage, None, status)
            raise
        pipeline._record(caller, model_id, run.usage, None, status)
        headers = lifecycle_headers(model) + tuple((h.name, h.value) for h in reserved.headers)
        await context.send_initial_metadata(headers)
        return model.id, params, shorten(vectors, params.dimensions), run.usage.prompt_tokens

    async def embed_for(self, caller, request, *, kind: str = "embedding"):
        """One request for an established caller (the batch worker's lines), reserved (and billed) as `kind`. Settled
        here only if nothing was embedded; on success the caller settles it (pipeline.settle) once its result is safe,
        and records it. Returns (model id, encoding format, vectors, prompt tokens)."""
        params = await parse_embedding_request(request)
        model = await self._resolve(params, caller)
        await reserve(self._downstream, caller, model, kind,
                      sum(worst_tokens(text, model.max_model_len) for text in params.texts))
        try:
            vectors, tokens = await self._infer(model, params, caller.request_id)
        except BaseException:
            self._pipeline.settle(caller, caller.request_id, Usage(), "rejected")  # nothing embedded: nothing billed
            raise
        return model.id, params.encoding_format, shorten(vectors, params.dimensions), sum(tokens)

    async def _resolve(self, params: EmbeddingParams, caller):
        identity = caller.identity
        span = trace.get_current_span()
        span.set_attribute("llmaas.tenant_id", identity.tenant_id)
        span.set_attribute("llmaas.key_id", identity.key_id)
        span.set_attribute("llmaas.inputs", len(params.texts))
        model = await self._downstream.resolve_model(params.model, identity.serve_successor, caller.signed)
        span.set_attribute("llmaas.model", model.id)
        check_model_permission(identity, params.model, model)
        if model.type != "embedding":
            raise invalid_request(f"The model '{model.id}' is a {model.type} model and does not create embeddings.",
                                  param="model", code="model_not_supported")
        if params.dimensions is not None and "dimensions" not in model.capabilities:
            raise invalid_request(f"The model '{model.id}' does not support shortened embeddings ('dimensions').",
                                  param="dimensions", code="unsupported_parameter")
        return model

    async def _reserve(self, params: EmbeddingParams, model, caller) -> metering_pb2.ReserveResponse:
        # A token covers at least one character (plus the two markers a BERT-style tokenizer adds), and no input may
        # exceed the context: the worst case metering holds against the budget.
        bound = sum(worst_tokens(text, model.max_model_len) for text in params.texts)
        return await reserve(self._downstream, caller, model, "embedding", bound)

    async def _infer(self, model, params: EmbeddingParams, request_id: str) -> tuple[np.ndarray, list[int]]:
        response = await call_triton(self._replicas, model, infer_request(model.triton_model, request_id,
                                                                          params.texts),
                                     timeout=INFER_TIMEOUT, failed="The model failed to embed the input.")
        return read_response(response, len(params.texts))


def worst_tokens(text: str, max_model_len: int) -> int:
    """The most tokens a BERT-style tokenizer makes of `text` (one per character, plus [CLS] and [SEP]), at most the
    context."""
    worst = len(text) + 2
    return min(worst, max_model_len) if max_model_len else worst


async def reserve(downstream, caller, model, kind: str, bound: int) -> metering_pb2.ReserveResponse:
    """Metering's reservation of `bound` input tokens for `caller` (a replayed request id is refused)."""
    identity = caller.identity
    reservation = metering_pb2.ReserveRequest(
        request_id=caller.request_id, tenant_id=identity.tenant_id, key_id=identity.key_id, model=model.id,
        max_input_tokens=bound, max_output_tokens=0, kind=kind,
        quotas=[metering_pb2.Quota(window_seconds=q.window_seconds, max_requests=q.max_requests,
                                   max_tokens=q.max_tokens) for q in identity.quotas],
        kwh_per_million_tokens=(model.kwh_per_million_tokens if model.HasField("kwh_per_million_tokens")
                                else None))
    reserved = await downstream.reserve(reservation, caller.signed)
    if reserved.replay:
        raise ApiError(grpc.StatusCode.ALREADY_EXISTS, "This request was already made: it is not served again.",
                       code="request_replayed")
    return reserved
