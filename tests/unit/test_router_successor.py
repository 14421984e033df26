"""The router's side of a retired model served by its successor: the key's permissions cover both models, and the
response says which model served."""

from __future__ import annotations

import grpc
import pytest
from llmaas.catalog.v1 import catalog_pb2
from llmaas.common.errors import ApiError
from llmaas.common.identity import Identity
from llmaas.router.pipeline import check_model_permission, lifecycle_headers

SUBSTITUTED = catalog_pb2.ResolveModelResponse(id="gpt-oss:120b", aliases=["openai/gpt-oss-120b"],
                                               substituted_for="cogito:32b", phase="production")


def allowed(*patterns: str) -> Identity:
    return Identity("t", "k", models=patterns, serve_successor=True)


def denied(identity: Identity, requested: str, model) -> str:
    with pytest.raises(ApiError) as e:
        check_model_permission(identity, requested, model)
    assert e.value.status == grpc.StatusCode.PERMISSION_DENIED and e.value.param == "model"
    return e.value.message


def test_the_key_must_be_allowed_both_the_retired_model_and_the_one_serving_it():
    for ok in (allowed(), allowed("cogito*", "gpt-oss*"), allowed("cogito:32b", "openai/*")):
        check_model_permission(ok, "cogito:32b", SUBSTITUTED)
    assert "'gpt-oss:120b' (which serves the retired 'cogito:32b')" in denied(allowed("cogito*"), "cogito:32b",
                                                                              SUBSTITUTED)
    assert "'cogito:32b'" in denied(allowed("gpt-oss*"), "cogito:32b", SUBSTITUTED)


def test_without_substitution_the_id_or_any_alias_may_match():
    model = catalog_pb2.ResolveModelResponse(id="smollm2:135m", aliases=["HuggingFaceTB/SmolLM2-135M-Instruct"])
    check_model_permission(allowed("HuggingFaceTB/*"), "smollm2:135m", model)
    check_model_permission(allowed("smollm2*"), "HuggingFaceTB/SmolLM2-135M-Instruct", model)
    assert "'smollm2:135m'." in denied(allowed("qwen*"), "smollm2:135m", model)


def test_the_substitution_header_names_both_models():
    headers = dict(lifecycle_headers(SUBSTITUTED))
    assert headers["x-llmaas-model-substituted"] == "cogito:32b; served-by=gpt-oss:120b"
    assert headers["x-llmaas-model-phase"] == "production" and "deprecation" not in headers
    plain = dict(lifecycle_headers(catalog_pb2.ResolveModelResponse(id="m", phase="production")))
    assert "x-llmaas-model-substituted" not in plain
