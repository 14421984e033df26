"""Hostile and unlucky input through the whole stack (Envoy, router, guard, metering, Triton) with the official OpenAI
SDK (issue 20): every such request gets a clear 4xx, never a 5xx, and metering cannot be inflated.

- `top_p: 0` (valid in OpenAI's spec, refused by vLLM) is served as greedy decoding.
- 10,000 messages, a 1 MB message, a prompt over the model's context: 400 `context_length_exceeded` naming the limit,
  before dispatch where the router can tell, from the backend's own verdict otherwise.
- `Settle` claiming 10^9 tokens after a `Reserve` of 10: capped at the reservation, the excess refused and reported.
- A failed request is counted apart from the served ones in the usage API and the CLI."""

from __future__ import annotations

import random
import secrets
import time

import grpc
import httpx
import openai
import pytest
from llmaas.cli.main import app
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.router import params as limits
from typer.testing import CliRunner

from tests.support.service_auth import tenant_metadata
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

CONTEXT = 4096  # the test model's max_model_len (tests/e2e/catalog.yaml)
HELLO = [{"role": "user", "content": "Say hello to the whole team please"}]
_VOCABULARY = ("river mountain quiet table lantern orchard copper meadow violet harbor pencil window garden thunder "
               "basket candle forest marble ladder pepper saddle tunnel velvet walnut anchor bridge castle dragon "
               "engine falcon glacier hammer island jacket kettle lemon mirror needle ocean pillow rabbit silver "
               "tiger umbrella valley wagon yellow zebra autumn blanket cotton desert feather ginger honey ivory "
               "jungle kitten").split()


def prose(words: int, seed: int = 0) -> str:
    """Varied words (no repetition the guard would flag): one token each for the deterministic engine."""
    rng = random.Random(seed)
    return " ".join(rng.choice(_VOCABULARY) for _ in range(words))


@pytest.fixture
def client(stack):
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=60)


def admin(stack, method: str, path: str, **kw) -> dict:
    r = httpx.request(method, stack["admin_url"] + path, headers={"Authorization": f"Bearer {stack['admin_token']}"},
                      timeout=30, **kw)
    assert r.status_code == 200, r.text
    return r.json()


def new_tenant_key(stack, prefix: str) -> tuple[str, str]:
    tenant_id = admin(stack, "POST", "/tenants", json={"name": f"{prefix}-{secrets.token_hex(4)}"})["tenant"][
        "tenant_id"]
    return tenant_id, admin(stack, "POST", f"/tenants/{tenant_id}/keys", json={"name": prefix})["api_key"]


def bad_request(call) -> openai.BadRequestError:
    with pytest.raises(openai.BadRequestError) as e:
        call()
    return e.value


# --- row 1: top_p 0, and every parameter within OpenAI's ranges ------------------------------------------------------

def test_top_p_zero_is_served_as_greedy(client):
    r = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, top_p=0, max_tokens=5)
    greedy = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, temperature=0, max_tokens=5)
    assert r.choices[0].message.content == greedy.choices[0].message.content
    chunks = list(client.chat.completions.create(model=TEST_MODEL, messages=HELLO, top_p=0, max_tokens=5,
                                                 stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == r.choices[0].message.content


def test_boundary_values_of_openai_ranges_are_served(client):
    for extra in ({"temperature": 0, "top_p": 1e-9}, {"temperature": 2, "top_p": 1}, {"presence_penalty": -2,
                  "frequency_penalty": 2}, {"seed": -(2**63)}, {"seed": 2**63 - 1}, {"stop": ""},
                  {"extra_body": {"top_k": 0}}, {"top_logprobs": 0}, {"logprobs": True, "top_logprobs": 20}):
        r = client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=3, **extra)
        assert r.choices[0].finish_reason in ("stop", "length"), extra


@pytest.mark.parametrize("field,value", [("temperature", 2.5), ("top_p", 1.5), ("presence_penalty", -3),
                                         ("top_logprobs", 21), ("n", 0), ("max_tokens", 0)])
def test_out_of_range_values_are_a_400_naming_the_param(client, field, value):
    err = bad_request(lambda: client.chat.completions.create(model=TEST_MODEL, messages=HELLO, **{field: value}))
    assert err.param == field


# --- row 2: sizes and the model's context ----------------------------------------------------------------------------

def test_ten_thousand_messages_are_refused_before_the_guard(client):
    t0 = time.monotonic()
    err = bad_request(lambda: client.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": f"message {i}"} for i in range(10_000)]))
    assert (err.code, err.param) == ("context_length_exceeded", "messages")
    assert f"maximum length {limits.MAX_MESSAGES}" in err.message
    assert time.monotonic() - t0 < 10


def test_a_one_megabyte_message_is_over_the_context(client):
    err = bad_request(lambda: client.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": prose(150_000)[:1_000_000]}]))
    assert (err.code, err.param) == ("context_length_exceeded", "messages")
    assert f"maximum context length is {CONTEXT} tokens" in err.message
    assert str(CONTEXT * limits.MAX_BYTES_PER_TOKEN) in err.message  # the limit applied, in bytes


def test_a_message_over_the_size_limit_names_it(client):
    err = bad_request(lambda: client.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": "x" * (limits.MAX_MESSAGE_BYTES + 1)}]))
    assert (err.code, err.param) == ("context_length_exceeded", "messages[0].content")
    assert str(limits.MAX_MESSAGE_BYTES) in err.message


@pytest.mark.parametrize("stream", [False, True])
def test_a_prompt_over_the_context_by_the_backends_count_is_a_400(client, stream):
    """~36 KB: within the router's byte bound, 5,000 tokens for the model: its own in-band verdict becomes the 400."""
    err = bad_request(lambda: client.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": prose(5000, seed=1)}], stream=stream))
    assert (err.code, err.param) == ("context_length_exceeded", "messages")
    assert "maximum context length" in err.message and "Error generating stream" not in err.message


def test_prompt_plus_max_tokens_over_the_context_is_a_400_with_the_exact_count(client):
    messages = [{"role": "user", "content": prose(1000, seed=2)}]
    err = bad_request(lambda: client.chat.completions.create(model=TEST_MODEL, messages=messages, max_tokens=3500))
    assert err.code == "context_length_exceeded"
    assert f"maximum context length is {CONTEXT} tokens" in err.message and "in the completion" in err.message
    # Certainly over (at least bytes / 16 prompt tokens): refused before the model.
    err = bad_request(lambda: client.chat.completions.create(model=TEST_MODEL, messages=messages,
                                                             max_tokens=CONTEXT - 10))
    assert err.code == "context_length_exceeded" and "at least" in err.message
    # Without max_tokens it is served (the default, capped to the room left).
    assert client.chat.completions.create(model=TEST_MODEL, messages=messages).choices[0].finish_reason == "stop"


# --- rows 3 and 4: metering ------------------------------------------------------------------------------------------

def usage_total(stack, tenant_id: str) -> dict:
    return admin(stack, "GET", f"/tenants/{tenant_id}/usage")["total"]


def test_a_settlement_above_its_reservation_is_capped_and_reported(stack):
    tenant_id, _ = new_tenant_key(stack, "capped")
    rid = "hostile-" + secrets.token_hex(8)
    md = tenant_metadata(stack, "metering", tenant_id, request_id=rid)  # as the router calls it
    with grpc.insecure_channel(stack["services"]["metering"]) as channel:
        metering = metering_pb2_grpc.MeteringInternalServiceStub(channel)
        metering.Reserve(metering_pb2.ReserveRequest(request_id=rid, tenant_id=tenant_id, key_id="k", model=TEST_MODEL,
                                                     max_input_tokens=6, max_output_tokens=4), metadata=md, timeout=10)
        settled = metering.Settle(metering_pb2.SettleRequest(request_id=rid, prompt_tokens=10**9,
                                                             completion_tokens=10**9, outcome="completed"),
                                  metadata=md, timeout=10)
    assert settled.recorded and settled.capped
    assert (settled.refused_prompt_tokens, settled.refused_completion_tokens) == (10**9 - 6, 10**9 - 4)
    assert float(settled.cost_eur) == (6 * 1.8 + 4 * 8) / 1e6
    total = usage_total(stack, tenant_id)
    assert (int(total["prompt_tokens"]), int(total["completion_tokens"])) == (6, 4)
    tier = admin(stack, "GET", f"/tenants/{tenant_id}/tier")
    assert float(tier["month_charged_eur"]) < 0.001  # not EUR 9,800: the tenant is not locked out


def test_failed_requests_are_counted_apart_from_served_ones(stack):
    tenant_id, key = new_tenant_key(stack, "outcomes")
    tenant_client = openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=60)
    served = [tenant_client.chat.completions.create(model=TEST_MODEL, messages=HELLO, max_tokens=3) for _ in range(2)]
    # Reserved, dispatched, refused by the model (over its context by its own count): a failed request.
    bad_request(lambda: tenant_client.chat.completions.create(
        model=TEST_MODEL, messages=[{"role": "user", "content": prose(5000, seed=3)}]))
    deadline = time.monotonic() + 20
    while True:
        total = usage_total(stack, tenant_id)
        if int(total.get("requests", 0)) + int(total.get("failed_requests", 0)) >= 3 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert int(total["requests"]) == len(served) and int(total["failed_requests"]) == 1
    assert int(total["prompt_tokens"]) == sum(r.usage.prompt_tokens for r in served)  # the refusal cost nothing
    result = CliRunner().invoke(app, ["usage", "show", tenant_id, "--admin-url", stack["admin_url"], "--token",
                                      stack["admin_token"]], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "failed" in result.output and "cancelled" in result.output
