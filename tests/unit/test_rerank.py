"""Rerank without the stack: Cohere's request shapes and their refusals, the KServe tensors, the response's order,
top_n and return_documents."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from google.protobuf import json_format
from llmaas.common.errors import ApiError
from llmaas.router.rerank import (
    MAX_DOCUMENTS,
    check_query_fits,
    infer_request,
    parse_rerank_request,
    read_response,
    response_body,
)
from llmaas.router.v1 import router_pb2
from tritonclient.grpc import service_pb2


def request(**body) -> router_pb2.RerankRequest:
    return json_format.ParseDict(body, router_pb2.RerankRequest())


def test_documents_as_strings_or_objects():
    params = parse_rerank_request(request(model="m", query="q", documents=["a", {"text": "b", "title": "t"}]))
    assert params.documents == ("a", "b") and params.top_n == 2 and params.return_documents is True
    params = parse_rerank_request(request(model="m", query="q", documents=["a", "b", "c"], top_n=9,
                                          return_documents=False))
    assert params.top_n == 3 and params.return_documents is False


@pytest.mark.parametrize(("body", "param"), [
    ({"query": "q", "documents": ["a"]}, "model"),
    ({"model": "m", "query": " ", "documents": ["a"]}, "query"),
    ({"model": "m", "query": "q"}, "documents"),
    ({"model": "m", "query": "q", "documents": []}, "documents"),
    ({"model": "m", "query": "q", "documents": "a"}, "documents"),
    ({"model": "m", "query": "q", "documents": [{"title": "a"}]}, "documents"),
    ({"model": "m", "query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, "documents"),
    ({"model": "m", "query": "q", "documents": ["a"], "top_n": 0}, "top_n"),
])
def test_refusals_name_the_param(body, param):
    with pytest.raises(ApiError) as e:
        parse_rerank_request(request(**body))
    assert e.value.param == param


def test_tensors_and_response_order():
    req = infer_request("m", "r", "q", ("a", "bc"))
    assert [(i.name, list(i.shape)) for i in req.inputs] == [("query", [1]), ("documents", [2])]
    assert req.raw_input_contents[1] == struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + b"bc"
    response = service_pb2.ModelInferResponse()
    response.outputs.add(name="score", datatype="FP32", shape=[3])
    response.outputs.add(name="num_input_tokens", datatype="INT32", shape=[3])
    response.raw_output_contents.extend([np.array([0.2, 0.9, 0.2], dtype=np.float32).tobytes(),
                                         np.array([3, 4, 5], dtype=np.int32).tobytes()])
    scores, tokens = read_response(response, 3)
    assert tokens == [3, 4, 5]
    params = parse_rerank_request(request(model="m", query="q", documents=["x", "y", "z"], top_n=2))
    body = response_body(params, scores, "2")
    assert [(r.index, round(r.relevance_score, 3), r.document.text) for r in body.results] == [
        (1, 0.9, "y"), (0, 0.2, "x")]  # equal scores keep the documents' order
    assert body.meta.billed_units.search_units == 3 and body.meta.api_version.version == "2"
    hidden = response_body(parse_rerank_request(request(model="m", query="q", documents=["x"],
                                                        return_documents=False)), scores[:1], "1")
    assert not hidden.results[0].HasField("document")


def test_a_query_certainly_over_the_context_is_refused_naming_the_query():
    with pytest.raises(ApiError) as err:
        check_query_fits("word " * 300, 256)
    assert err.value.param == "query" and err.value.code == "context_length_exceeded"
    check_query_fits("word " * 254, 256)  # may fit: Triton decides
    check_query_fits("word " * 300, 0)  # no known context
