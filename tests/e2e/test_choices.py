"""Several choices through the stack with the unmodified OpenAI SDK: chat's `n` (streamed and not, the real default
model too) and /v1/completions' `n` with an array of prompts; every choice billed, each prompt's tokens once."""

from __future__ import annotations

from collections import defaultdict

import httpx
import openai
import pytest

from tests.support.stack import REAL_MODEL, TEST_MODEL

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

ASK = [{"role": "user", "content": "Name three colours of the French flag"}]


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=300)


def test_n_choices_are_each_answered_and_billed(client):
    one = client.chat.completions.create(model=TEST_MODEL, messages=ASK)
    r = client.chat.completions.create(model=TEST_MODEL, messages=ASK, n=3, seed=5)
    assert [c.index for c in r.choices] == [0, 1, 2]
    assert all(c.message.content == one.choices[0].message.content and c.finish_reason == "stop" for c in r.choices)
    assert r.usage.prompt_tokens == one.usage.prompt_tokens  # the prompt once
    assert r.usage.completion_tokens == 3 * one.usage.completion_tokens  # every choice


def test_n_choices_streamed_each_with_its_index_and_finish(client):
    one = client.chat.completions.create(model=TEST_MODEL, messages=ASK)
    chunks = list(client.chat.completions.create(model=TEST_MODEL, messages=ASK, n=2, stream=True,
                                                 stream_options={"include_usage": True}))
    text, finishes, roles = defaultdict(str), defaultdict(list), defaultdict(list)
    for chunk in chunks:
        for choice in chunk.choices:
            text[choice.index] += choice.delta.content or ""
            roles[choice.index] += [choice.delta.role] if choice.delta.role else []
            finishes[choice.index] += [choice.finish_reason] if choice.finish_reason else []
    assert dict(text) == {0: one.choices[0].message.content, 1: one.choices[0].message.content}
    assert dict(roles) == {0: ["assistant"], 1: ["assistant"]} and dict(finishes) == {0: ["stop"], 1: ["stop"]}
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == 2 * one.usage.completion_tokens
    assert chunks[-1].usage.prompt_tokens == one.usage.prompt_tokens


def test_the_sdks_stream_helper_assembles_each_choice(client):
    with client.chat.completions.stream(model=TEST_MODEL, messages=ASK, n=2) as stream:
        final = stream.get_final_completion()
    assert [c.index for c in final.choices] == [0, 1]
    assert final.choices[0].message.content == final.choices[1].message.content != ""


def test_the_real_default_model_samples_several_choices(client):
    r = client.chat.completions.create(model=REAL_MODEL, messages=ASK, n=2, max_tokens=8, temperature=1.0, seed=3)
    assert len(r.choices) == 2 and all(c.message.content and c.finish_reason in ("stop", "length") for c in r.choices)
    assert 2 <= r.usage.completion_tokens <= 16 and r.usage.prompt_tokens > 0  # both choices billed


def test_completions_answer_every_prompt_n_times_in_openais_order(client):
    prompts = ["The sky is", "Roses are red and violets"]
    singles = [client.completions.create(model=TEST_MODEL, prompt=p) for p in prompts]
    r = client.completions.create(model=TEST_MODEL, prompt=prompts, n=2, echo=True)
    assert [c.index for c in r.choices] == [0, 1, 2, 3]
    assert [c.text for c in r.choices] == [prompts[0] + singles[0].choices[0].text] * 2 + [
        prompts[1] + singles[1].choices[0].text] * 2
    assert r.usage.prompt_tokens == sum(s.usage.prompt_tokens for s in singles)
    assert r.usage.completion_tokens == 2 * sum(s.usage.completion_tokens for s in singles)
    streamed = list(client.completions.create(model=TEST_MODEL, prompt=prompts, n=2, stream=True,
                                              stream_options={"include_usage": True}))
    text, finishes = defaultdict(str), defaultdict(list)
    for event in streamed:
        for choice in event.choices:
            text[choice.index] += choice.text
            finishes[choice.index] += [choice.finish_reason] if choice.finish_reason else []
    assert [text[i] for i in range(4)] == [c.text.removeprefix(prompts[i // 2]) for i, c in enumerate(r.choices)]
    assert all(len(finishes[i]) == 1 for i in range(4))
    assert streamed[-1].usage.total_tokens == r.usage.total_tokens


def test_choices_beyond_the_limit_are_a_400_naming_the_param(client):
    with pytest.raises(openai.BadRequestError) as e:
        client.chat.completions.create(model=TEST_MODEL, messages=ASK, n=129)
    assert e.value.body["param"] == "n"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=TEST_MODEL, prompt=["a"] * 65, n=2)
    assert e.value.body["param"] == "prompt"
    with pytest.raises(openai.BadRequestError) as e:
        client.completions.create(model=TEST_MODEL, prompt="a", n=2, best_of=3)
    assert e.value.body["param"] == "best_of"


def test_a_chat_shaped_body_on_completions_is_a_chat_completion(stack, client):
    # The reference: /v1/completions "uses the same format as /v1/chat/completions with messages", and answers in it.
    url, auth = f"{stack['base_url']}/completions", {"Authorization": f"Bearer {stack['api_key']}"}
    r = httpx.post(url, headers=auth, json={"model": TEST_MODEL, "messages": ASK, "max_tokens": 20, "n": 2}, timeout=60)
    assert r.status_code == 200, r.text
    body = r.json()
    chat = client.chat.completions.create(model=TEST_MODEL, messages=ASK, max_tokens=20)
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert [c["message"]["content"] for c in body["choices"]] == [chat.choices[0].message.content] * 2
    # A query string stays with the body (the transcoder reads fields from it too).
    r = httpx.post(url + "?max_tokens=3", headers=auth, json={"model": TEST_MODEL, "messages": ASK}, timeout=60)
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] == 3, r.text
    # Both forms at once is neither: the completions request has no `messages`, named as OpenAI would.
    r = httpx.post(url, headers=auth, json={"model": TEST_MODEL, "messages": ASK, "prompt": "hi"}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    # A chat-only field on a classic completions body is still unknown there.
    r = httpx.post(url, headers=auth, json={"model": TEST_MODEL, "prompt": "hi", "tools": []}, timeout=60)
    assert r.status_code == 400 and r.json()["error"]["param"] == "tools"
