"""Reasoning models through the stack (Envoy, the services, Triton) with the unmodified OpenAI SDK: the reasoning in
`message.reasoning_content` and streamed `delta.reasoning_content` (never in `content`), reasoning_tokens in the usage
and billed at the reasoning price, reasoning_effort honoured by a model that takes it and a 400 naming it elsewhere.

The model is llmaas-test:reasoning (tests/e2e/catalog.yaml): the deterministic engine in its reasoning mode, which
thinks `<think>...</think>` for as many steps as the effort its chat template wrote into the prompt asks, then echoes.
Its stack has a price table of its own, where reasoning costs three times the output, so the bill tells which price
applied (the deployed table prices both at 8 EUR per million tokens)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import httpx
import openai
import pytest
import yaml
from llmaas.stack.paths import DEPLOY_DIR

from tests.e2e.test_metering import new_key, new_tenant, settled_usage
from tests.support.stack import TEST_MODEL, running_stack

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "deploy" / "triton" / "backends" / "vllm"))
from llmaas_cpu.deterministic import reasoning_for, tokenize_text  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

MODEL = "llmaas-test:reasoning"
ASK = [{"role": "user", "content": "Please repeat after me: the quick brown fox jumps over the lazy dog."}]
# EUR per million tokens in this stack's table: input and output as deployed, reasoning dearer.
INPUT, OUTPUT, REASONING = 1800, 8000, 24000  # nano-EUR per token


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    prices = yaml.safe_load((DEPLOY_DIR / "metering" / "prices.yaml").read_text())
    for entry in prices["prices"]:
        assert (entry["input"], entry["output"]) == ("1.8", "8")
        entry["reasoning"] = "24"
    path = tmp_path_factory.mktemp("prices") / "prices.yaml"
    path.write_text(yaml.safe_dump(prices))
    with running_stack(tmp_path_factory.mktemp("e2e-reasoning") / "data",
                       env={"LLMAAS_METERING_PRICES": str(path)}) as s:
        yield s


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


def thinking(effort: str = "medium") -> str:
    """The reasoning_content the engine's thinking gives: the text between the markers."""
    return reasoning_for(effort).strip().removeprefix("<think>").removesuffix("</think>")


def thinking_tokens(effort: str = "medium") -> int:
    """Its tokens up to and including the end marker."""
    return len(tokenize_text(reasoning_for(effort).rstrip()))


def test_the_reasoning_is_in_reasoning_content_never_in_content(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200)
    message, usage = r.choices[0].message, r.usage
    assert r.choices[0].finish_reason == "stop"
    assert message.reasoning_content == thinking()
    assert message.content.startswith("Echo: ") and "think" not in message.content and "Step" not in message.content
    assert usage.completion_tokens_details.reasoning_tokens == thinking_tokens()
    # The answer's tokens and the EOS are the rest of the output.
    assert usage.completion_tokens == thinking_tokens() + len(tokenize_text("\n\n" + message.content)) + 1


def test_streamed_reasoning_comes_first_in_delta_reasoning_content(client):
    chunks = list(client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200, stream=True,
                                                 stream_options={"include_usage": True}))
    kinds = []
    for c in chunks:
        delta = c.choices[0].delta if c.choices else None
        if delta is not None and getattr(delta, "reasoning_content", None):
            kinds.append("reasoning")
            assert not delta.content
        elif delta is not None and delta.content:
            kinds.append("content")
    # Many reasoning deltas (the markers split across the engine's tokens), then the answer's.
    assert kinds.count("reasoning") > 5 and kinds == sorted(kinds, key=lambda k: k == "content")
    reasoning = "".join(getattr(c.choices[0].delta, "reasoning_content", None) or "" for c in chunks if c.choices)
    content = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert reasoning == thinking() and content.startswith("Echo: ") and "<" not in content
    assert chunks[-1].usage.completion_tokens_details.reasoning_tokens == thinking_tokens()

    # The SDK's stream helper assembles the same message.
    with client.chat.completions.stream(model=MODEL, messages=ASK, max_tokens=200) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.reasoning_content == reasoning and final.choices[0].message.content == content


async def test_async_sdk_streamed_and_not(stack):
    client = openai.AsyncOpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)
    async with client:
        whole, stream = await asyncio.gather(
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200, reasoning_effort="low"),
            client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=200, reasoning_effort="low",
                                           stream=True))
        reasoning = "".join([getattr(c.choices[0].delta, "reasoning_content", None) or "" async for c in stream
                             if c.choices])
    assert whole.choices[0].message.reasoning_content == reasoning == thinking("low")


def test_reasoning_effort_sets_how_long_the_model_thinks(client):
    tokens = {}
    for effort in ("low", "medium", "high"):
        r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=400, reasoning_effort=effort)
        assert r.choices[0].message.reasoning_content == thinking(effort)
        tokens[effort] = r.usage.completion_tokens_details.reasoning_tokens
        assert tokens[effort] == thinking_tokens(effort)
    assert tokens["low"] < tokens["medium"] < tokens["high"]


@pytest.mark.parametrize("model,effort", [(TEST_MODEL, "low"), (MODEL, "minimal"), (MODEL, "extreme")])
def test_reasoning_effort_the_model_does_not_take_is_a_400_naming_it(client, model, effort):
    # A model without reasoning takes no effort; the reasoning model takes low, medium and high only; "extreme" is
    # no effort at all.
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=model, messages=ASK, max_tokens=4, reasoning_effort=effort)
    assert e.value.param == "reasoning_effort" and e.value.status_code == 400


def test_a_model_without_reasoning_answers_as_before(client):
    r = client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=20)
    assert r.choices[0].message.content.startswith("Echo: ")
    assert getattr(r.choices[0].message, "reasoning_content", None) is None
    assert r.usage.completion_tokens_details is None
    raw = httpx.post(f"{client.base_url}chat/completions", headers={"Authorization": f"Bearer {client.api_key}"},
                     json={"model": TEST_MODEL, "messages": ASK, "max_tokens": 20}, timeout=60).json()
    assert "reasoning_content" not in raw["choices"][0]["message"] and "completion_tokens_details" not in raw["usage"]


def test_an_answer_cut_while_thinking_is_all_reasoning(client):
    r = client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=8)
    assert r.choices[0].finish_reason == "length" and r.choices[0].message.content == ""
    assert thinking().startswith(r.choices[0].message.reasoning_content)
    assert r.usage.completion_tokens_details.reasoning_tokens == r.usage.completion_tokens == 8


def test_reasoning_tokens_are_billed_at_the_reasoning_price(stack):
    tenant_id = new_tenant(stack, "reasoning")
    _, key = new_key(stack, tenant_id)
    client = openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=120)
    usages = [client.chat.completions.create(model=MODEL, messages=ASK, max_tokens=400, reasoning_effort=e).usage
              for e in ("low", "high")]
    usages.append(next(c.usage for c in client.chat.completions.create(
        model=MODEL, messages=ASK, max_tokens=400, stream=True, stream_options={"include_usage": True}) if c.usage))
    total = settled_usage(stack, tenant_id, len(usages))
    prompt, completion = sum(u.prompt_tokens for u in usages), sum(u.completion_tokens for u in usages)
    reasoning = sum(u.completion_tokens_details.reasoning_tokens for u in usages)
    assert reasoning == thinking_tokens("low") + thinking_tokens("high") + thinking_tokens("medium")
    assert (int(total["prompt_tokens"]), int(total["completion_tokens"]), int(total["reasoning_tokens"])) == \
        (prompt, completion, reasoning)
    expected = prompt * INPUT + (completion - reasoning) * OUTPUT + reasoning * REASONING
    assert total["cost_eur"] == f"{expected / 1e9:.9f}"
