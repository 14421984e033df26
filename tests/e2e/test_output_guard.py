"""The guard's output side through the whole stack, with the real OpenAI SDK: an answer that repeats the system
prompt is answered whole and flagged (header, metric) in enforce and shadow mode, and not looked at in off mode.

The deterministic test model answers "Echo: " and the prompt's last 8 words: a long system prompt followed by a user
message without words makes it repeat the system prompt's last 8 words verbatim, a leak."""

from __future__ import annotations

import urllib.request

import httpx
import openai
import pytest
from llmaas.guard.v1 import guard_pb2

from tests.e2e.test_guard import new_tenant, set_mode
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

SYSTEM = ("You are the support assistant of Acme Bank. Answer politely in the customer's language and keep every "
          "reply under one hundred words.")
LEAKING = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "?"}]
ECHO = "Echo: and keep every reply under one hundred words"


@pytest.fixture(scope="module")
def tenant(stack):
    return new_tenant(stack)


def client(stack, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=60)


def findings(stack, mode: str) -> float:
    total = 0.0
    for url in stack["metrics"].values():
        with urllib.request.urlopen(url, timeout=10) as r:
            for line in r.read().decode().splitlines():
                if (line.startswith("llmaas_router_output_guard_findings_total{") and f'mode="{mode}"' in line
                        and 'reason="system_prompt_leak"' in line and f'model="{TEST_MODEL}"' in line):
                    total += float(line.rsplit(" ", 1)[1])
    return total


def test_enforce_flags_a_leak_and_answers_it_whole(stack, tenant):
    # A leak is reported, never cut (ordinary answers restate instructions); exfiltration is what enforce cuts (the
    # deterministic engine cannot write a Markdown image: the cut is tested through the pipeline, in
    # tests/unit/test_output_guard.py).
    tenant_id, key = tenant
    set_mode(stack, tenant_id, guard_pb2.GUARD_MODE_ENFORCE)
    before = findings(stack, "enforce")
    raw = client(stack, key).chat.completions.with_raw_response.create(model=TEST_MODEL, messages=LEAKING)
    r = raw.parse()
    assert r.choices[0].message.content == ECHO and r.choices[0].finish_reason == "stop"
    assert raw.headers["x-llmaas-output-guard"] == "flagged; reasons=system_prompt_leak"
    assert r.usage.completion_tokens == 11
    assert findings(stack, "enforce") == before + 1
    chunks = list(client(stack, key).chat.completions.create(
        model=TEST_MODEL, messages=LEAKING, stream=True, stream_options={"include_usage": True}))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == ECHO
    finishes = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finishes == ["stop"] and chunks[-1].usage.completion_tokens == 11
    assert findings(stack, "enforce") == before + 2


def test_shadow_answers_unchanged_and_flags(stack, tenant):
    tenant_id, key = tenant
    set_mode(stack, tenant_id, guard_pb2.GUARD_MODE_SHADOW)
    before = findings(stack, "shadow")
    raw = client(stack, key).chat.completions.with_raw_response.create(model=TEST_MODEL, messages=LEAKING)
    r = raw.parse()
    assert r.choices[0].message.content == ECHO and r.choices[0].finish_reason == "stop"
    assert raw.headers["x-llmaas-output-guard"] == "flagged; reasons=system_prompt_leak"
    assert findings(stack, "shadow") == before + 1
    streamed = list(client(stack, key).chat.completions.create(model=TEST_MODEL, messages=LEAKING, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in streamed if c.choices) == ECHO
    assert streamed[-1].choices[0].finish_reason == "stop"


def test_off_does_not_look(stack, tenant):
    tenant_id, key = tenant
    set_mode(stack, tenant_id, guard_pb2.GUARD_MODE_OFF)
    r = httpx.post(f"{stack['base_url']}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                   json={"model": TEST_MODEL, "messages": LEAKING}, timeout=30)
    assert r.status_code == 200 and "x-llmaas-output-guard" not in r.headers
    assert r.json()["choices"][0]["message"]["content"] == ECHO


def test_ordinary_answers_pass_in_enforce_mode(stack):
    # The default tenant (enforce): a short system prompt is not protected, and an answer echoing a user's words
    # is not a leak.
    for messages in ([{"role": "system", "content": "You are concise and helpful."}, {"role": "user", "content": "?"}],
                     [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Summarise the plot of "
                                                                             "Hamlet in three short lines please"}]):
        raw = client(stack, stack["api_key"]).chat.completions.with_raw_response.create(model=TEST_MODEL,
                                                                                       messages=messages)
        assert raw.parse().choices[0].finish_reason == "stop" and "x-llmaas-output-guard" not in raw.headers
