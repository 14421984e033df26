"""The generated public OpenAPI description (gateway/openapi.yaml) says what the wire carries: the router's own
chat.completion JSON and SSE chunks (written into an HttpBody, so not the protos' word) and OpenAI's error shape
validate against it; only the public methods are in it."""

from __future__ import annotations

import json
from types import SimpleNamespace

import grpc
import jsonschema_rs  # schemathesis's validator (a dependency of the pinned schemathesis)
import pytest
import yaml
from llmaas.catalog.v1.catalog_pb2 import ReasoningFormat
from llmaas.common.errors import ApiError
from llmaas.router import openai_json
from llmaas.router.pipeline import Usage
from llmaas.stack import openapi
from llmaas.stack.paths import GATEWAY_DIR

SPEC = yaml.safe_load((GATEWAY_DIR / "openapi.yaml").read_text())


def _validator(name: str) -> jsonschema_rs.Validator:
    return jsonschema_rs.Draft202012Validator({"$ref": f"#/components/schemas/{name}",
                                               "components": SPEC["components"]})


def _fake_run(include_usage: bool, reasoning=None) -> SimpleNamespace:
    """FakeRun: the ChatRun attributes openai_json reads."""
    return SimpleNamespace(id="chatcmpl-1", created=1796600000, model="m", triton_model="t", finish_reason="length",
                           usage=Usage(prompt_tokens=3, completion_tokens=2, reasoning_tokens=1),
                           params=SimpleNamespace(include_usage=include_usage), output=None, reasoning=reasoning)


def _decoded(event: bytes) -> dict:
    assert event.startswith(b"data: ") and event.endswith(b"\n\n")
    return json.loads(event[len(b"data: "):])


def test_the_routers_chat_completion_is_valid():
    _validator(openapi.CHAT_RESPONSE).validate(openai_json.completion(_fake_run(False), "hello"))


@pytest.mark.parametrize("reasoning_content", ["Let me think.", None])
def test_a_reasoning_models_completion_and_chunks_are_valid(reasoning_content):
    run = _fake_run(True, reasoning=ReasoningFormat())
    message = {"role": "assistant", "content": "hello", "refusal": None, "reasoning_content": reasoning_content}
    body = openai_json.completion(run, "", message)
    assert body["usage"]["completion_tokens_details"] == {"reasoning_tokens": 1}
    _validator(openapi.CHAT_RESPONSE).validate(body)
    chunk = _validator(openapi.CHAT_CHUNK)
    for event in (openai_json.chunk(run, {"reasoning_content": "Let me"}), openai_json.usage_chunk(run)):
        chunk.validate(_decoded(openai_json.sse(event)))


@pytest.mark.parametrize("include_usage", [False, True])
def test_the_routers_chunks_are_valid(include_usage):
    run = _fake_run(include_usage)
    chunk = _validator(openapi.CHAT_CHUNK)
    for event in (openai_json.chunk(run, {"role": "assistant", "content": "", "refusal": None}),
                  openai_json.chunk(run, {"content": "hi"}),
                  openai_json.chunk(run, {}, finish_reason="stop"),
                  openai_json.usage_chunk(run)):
        chunk.validate(_decoded(openai_json.sse(event)))


def test_errors_in_and_out_of_band_are_openai_errors():
    error = _validator(openapi.ERROR)
    body = ApiError(grpc.StatusCode.INVALID_ARGUMENT, "Bad.", param="model", code="invalid_value").body()
    error.validate(body)
    error.validate(_decoded(openai_json.sse_error(ApiError(grpc.StatusCode.INTERNAL, "Oops."))))
    assert not error.is_valid({"code": 13, "message": "grpc status"})


def test_the_stream_ends_with_done_and_every_operation_errs_in_openai_shape():
    chat = SPEC["paths"][openapi.CHAT_PATH]["post"]["responses"]
    assert set(chat["200"]["content"]) == {openapi.JSON, openapi.SSE}
    # (Plain JSON Schema only annotates contentSchema; schemathesis asserts it, on the real stream.)
    data = chat["200"]["content"][openapi.SSE]["schema"]["properties"]["data"]["anyOf"]
    assert {"const": "[DONE]"} in data
    assert {branch.get("contentSchema", {}).get("$ref", "").rsplit("/", 1)[-1] for branch in data} >= {
        openapi.CHAT_CHUNK, openapi.ERROR}
    for operations in SPEC["paths"].values():
        for operation in operations.values():
            assert operation["responses"]["default"]["content"][openapi.JSON]["schema"]["$ref"].endswith("/Error")


def test_only_public_methods_are_described():
    operations = {op["operationId"] for ops in SPEC["paths"].values() for op in ops.values()}
    assert {"RouterService_ChatCompletionsHttp", "CatalogService_ListModels", "AuthService_CreateTenant"} <= operations
    internal = ("CreateChatCompletion", "StreamChatCompletion", "ResolveModel", "Authenticate", "RecordRequest",
                "CurrentIdentity", "CheckPrompt", "Reserve", "Settle")
    assert not {op for op in operations if op.split("_", 1)[1] in internal}
    # /v2/rerank: Cohere's v2 shape, served under its own prefix as the reference does.
    assert all(path.startswith(("/v1/", "/v2/rerank", "/admin/v1/")) for path in SPEC["paths"])


def test_integers_have_their_proto_types_range():
    # The plugin writes uint32 as "int64" with no bounds and 64-bit integers as free strings: the fuzzer then sent
    # nothing a service could take. The descriptor set says what each field is.
    audit = SPEC["paths"]["/admin/v1/tenants/{tenant_id}/audit"]["get"]["parameters"]
    params = {p["name"]: p["schema"] for p in audit}
    assert (params["limit"]["minimum"], params["limit"]["maximum"]) == (0, 2**32 - 1)  # uint32
    assert params["after_seq"]["pattern"] == "^[0-9]+$"  # uint64, a JSON string
    schemas = SPEC["components"]["schemas"]
    request = schemas["llmaas.router.v1.CreateChatCompletionRequest"]["properties"]
    assert (request["max_tokens"]["minimum"], request["max_tokens"]["maximum"]) == (-2**31, 2**31 - 1)  # int32
    assert request["seed"]["pattern"] == "^-?[0-9]+$"  # int64
    key_body = schemas["llmaas.auth.v1.AuthService.CreateApiKeyBody"]["properties"]  # the request minus tenant_id
    assert key_body["rotation_period_days"]["maximum"] == 2**32 - 1
    quota = schemas["llmaas.auth.v1.Quota"]["properties"]
    assert quota["max_requests"]["pattern"] == "^[0-9]+$"
