"""POST /v1/rerank and /v2/rerank (Cohere's shapes, as the reference serves them): the query and its documents in one
Triton call to a model with the rerank contract (deploy/triton/model_repository/all-minilm-l6-v2-rerank), billed per
reranked token (each document's tokens plus the query's, the reference's rule) at the `rerank` price.

The guard checks the query as the user's text and the documents as third-party text, after metering's grant (limits
before costly work), before the model: a reranker's output is what a RAG application puts in front of a chat model
next, so a document carrying an injection is refused here (enforce) or flagged in `x-llmaas-guard` (shadow), as a
tool result or document would be in a chat request.
"""

from __future__ import annotations

import asyncio
import struct
import uuid
from dataclasses import dataclass

import grpc
import numpy as np
from opentelemetry import trace
from tritonclient.grpc import service_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.identity import metadata_dict
from llmaas.guard.v1 import guard_pb2
from llmaas.router.embeddings import INFER_TIMEOUT, _Run, reserve, worst_tokens
from llmaas.router.pipeline import ChatPipeline, check_model_permission, guard_headers, guard_reasons, lifecycle_headers
from llmaas.router.unary import call_triton
from llmaas.router.v1 import router_pb2

REST_RERANK = {"1": "POST /v1/rerank", "2": "POST /v2/rerank"}
GRPC_RERANK = {"1": "grpc llmaas.router.v1.RouterService/RerankV1", "2": "grpc llmaas.router.v1.RouterService/RerankV2"}
# Cohere's limit on documents per request.
MAX_DOCUMENTS = 1000


@dataclass(frozen=True)
class RerankParams:
    model: str
    query: str
    documents: tuple[str, ...]
    top_n: int
    return_documents: bool


def parse_rerank_request(request: router_pb2.RerankRequest) -> RerankParams:
    if not request.model:
        raise invalid_request("'model' is required.", param="model", code="missing_required_parameter")
    if not request.query.strip():
        raise invalid_request("'query' is required and must not be empty.", param="query", code="invalid_value")
    value = request.documents
    if value.WhichOneof("kind") != "list_value" or not value.list_value.values:
        raise invalid_request("'documents' must be a non-empty array of strings or of objects with 'text'.",
                              param="documents", code="invalid_value")
    items = value.list_value.values
    if len(items) > MAX_DOCUMENTS:
        raise invalid_request(f"Invalid 'documents': at most {MAX_DOCUMENTS} documents per request, got "
                              f"{len(items)}.", param="documents", code="too_many_documents")
    documents = []
    for i, item in enumerate(items):
        kind = item.WhichOneof("kind")
        if kind == "string_value":
            text = item.string_value
        elif kind == "struct_value" and item.struct_value.fields.get("text") is not None \
                and item.struct_value.fields["text"].WhichOneof("kind") == "string_value":
            text = item.struct_value.fields["text"].string_value
        else:
            raise invalid_request(f"Invalid 'documents[{i}]': a string or an object with a string 'text'.",
                                  param="documents", code="invalid_value")
        documents.append(text)
    top_n = request.top_n if request.HasField("top_n") else len(documents)
    if top_n < 1:
        raise invalid_request("Invalid 'top_n': it must be at least 1.", param="top_n", code="invalid_value")
    return RerankParams(request.model, request.query, tuple(documents), min(top_n, len(documents)),
                        request.return_documents if request.HasField("return_documents") else True)


def check_query_fits(query: str, max_model_len: int) -> None:
    """A query certainly over the context (a BERT-style tokenizer makes at least one token per word, plus [CLS] and
    [SEP]) is refused here, naming the query, before the guard (which would flag its length as flooding) and the
    model."""
    least = len(query.split()) + 2
    if max_model_len and least > max_model_len:
        raise invalid_request(f"The query is at least {least} tokens, over the model's context of {max_model_len}; "
                              f"shorten the query.", param="query", code="context_length_exceeded")


def _bytes_tensor(texts) -> bytes:
    return b"".join(struct.pack("<I", len(b)) + b for b in (t.encode() for t in texts))


def infer_request(model: str, request_id: str, query: str, documents: tuple[str, ...]) -> service_pb2.ModelInferRequest:
    request = service_pb2.ModelInferRequest(model_name=model, id=request_id)
    request.inputs.add(name="query", datatype="BYTES", shape=[1])
    request.inputs.add(name="documents", datatype="BYTES", shape=[len(documents)])
    request.raw_input_contents.extend([_bytes_tensor([query]), _bytes_tensor(documents)])
    request.outputs.add(name="score")
    request.outputs.add(name="num_input_tokens")
    return request


def read_response(response: service_pb2.ModelInferResponse, n: int) -> tuple[np.ndarray, list[int]]:
    raw = {t.name: (t, response.raw_output_contents[i]) for i, t in enumerate(response.outputs)}
    scores = np.frombuffer(raw["score"][1], dtype="<f4")
    tensor, data = raw["num_input_tokens"]
    tokens = np.frombuffer(data, dtype="<i4" if tensor.datatype == "INT32" else "<i8").tolist()
    if len(scores) != n or len(tokens) != n:
        raise ApiError(grpc.StatusCode.INTERNAL, "The model returned a malformed response.", code="backend_error")
    return scores, tokens


def response_body(params: RerankParams, scores: np.ndarray, version: str) -> router_pb2.RerankResponse:
    # Highest first; equal scores keep the documents' order.
    order = sorted(range(len(scores)), key=lambda i: (-float(scores[i]), i))[:params.top_n]
    results = [router_pb2.RerankResult(
        index=i, relevance_score=round(float(scores[i]), 6),
        document=router_pb2.RerankDocument(text=params.documents[i]) if params.return_documents else None)
        for i in order]
    return router_pb2.RerankResponse(
        id=str(uuid.uuid4()), results=results,
        meta=router_pb2.RerankMeta(api_version=router_pb2.RerankApiVersion(version=version),
                                   billed_units=router_pb2.RerankBilledUnits(search_units=len(params.documents))))


class RerankService:
    def __init__(self, pipeline: ChatPipeline) -> None:
        self._pipeline = pipeline
        self._downstream = pipeline._downstream
        self._replicas = pipeline._replicas

    async def rerank(self, request, context, version: str, endpoint: str) -> router_pb2.RerankResponse:
        pipeline = self._pipeline
        caller = await pipeline._caller(metadata_dict(context), context, endpoint)
        run, model_id = _Run(caller, caller.request_id), ""
        try:
            params = parse_rerank_request(request)
            span = trace.get_current_span()
            span.set_attribute("llmaas.tenant_id", caller.identity.tenant_id)
            span.set_attribute("llmaas.documents", len(params.documents))
            model = await self._downstream.resolve_model(params.model, caller.identity.serve_successor,
                                                         caller.signed)
            model_id = model.id
            span.set_attribute("llmaas.model", model.id)
            check_model_permission(caller.identity, params.model, model)
            if model.type != "rerank":
                raise invalid_request(f"The model '{model.id}' is a {model.type} model and does not rerank.",
                                      param="model", code="model_not_supported")
            check_query_fits(params.query, model.max_model_len)
            query = worst_tokens(params.query, model.max_model_len)
            bound = sum(query + worst_tokens(d, model.max_model_len) for d in params.documents)
            try:
                reserved = await reserve(self._downstream, caller, model, "rerank", bound)
            except asyncio.CancelledError:
                pipeline._settle(run, "cancelled")  # the client left while metering was granting: release it
                raise
            try:
                verdict = await self._check(caller, params)
                response = await call_triton(self._replicas, model, infer_request(
                    model.triton_model, caller.request_id, params.query, params.documents),
                    timeout=INFER_TIMEOUT, failed="The model failed to rerank the documents.")
                scores, tokens = read_response(response, len(params.documents))
            except ApiError as err:
                pipeline._settle(run, "rejected")
                if err.code == "context_length_exceeded":
                    raise invalid_request(err.message.replace("the input", "the query"), param="query",
                                          code=err.code) from None
                raise
            except BaseException:
                pipeline._settle(run, "rejected")
                raise
            run.usage.prompt_tokens = sum(tokens)
            pipeline._settle(run, "completed")
            span.set_attribute("llmaas.prompt_tokens", run.usage.prompt_tokens)
            body = response_body(params, scores, version)
        except ApiError as err:
            pipeline._record(caller, model_id, run.usage, err)
            raise
        except asyncio.CancelledError:
            pipeline._record(caller, model_id, run.usage, None, 499)
            raise
        pipeline._record(caller, model_id, run.usage, None)
        await context.send_initial_metadata(lifecycle_headers(model) + guard_headers(verdict)
                                            + tuple((h.name, h.value) for h in reserved.headers))
        return body

    async def _check(self, caller, params: RerankParams) -> guard_pb2.CheckPromptResponse:
        """The guard's verdict over the query (the user's) and the documents (third-party text)."""
        parts = [guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_USER, text=params.query)]
        parts += [guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_DOCUMENT, text=d) for d in params.documents]
        verdict = await self._downstream.check_prompt(guard_pb2.CheckPromptRequest(
            tenant_id=caller.identity.tenant_id, request_id=caller.request_id, parts=parts), caller.signed)
        if verdict.decision == guard_pb2.DECISION_BLOCK:
            raise invalid_request(f"The query or documents were rejected by the prompt security policy "
                                  f"({guard_reasons(verdict)}).", param="documents", code="prompt_rejected")
        return verdict
