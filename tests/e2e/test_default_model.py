"""The real default model (SmolLM2-135M-Instruct on llama.cpp) through the whole stack, on a chat-length prompt.

A short "What is 2+2?" never exercised what crashed on an AVX-512/AMX Xeon (a llama.cpp built with -march=native):
a system prompt plus a pasted document, a few hundred tokens, several completions in a row, streamed and not.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import openai
import pytest
from llmaas.catalog.entries import load_catalog
from llmaas.router.params import Message
from llmaas.router.template import render_prompt
from llmaas.stack.paths import DEFAULT_CATALOG, DEFAULT_MODEL_REPOSITORY, REPO_ROOT

from tests.support.stack import REAL_MODEL

sys.path.insert(0, str(REPO_ROOT / "deploy" / "triton" / "backends" / "vllm"))
from llmaas_cpu.llama_engine import resolve_gguf  # noqa: E402

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(300)]

# A support desk's system prompt and a user pasting a paragraph of a document: ~365 tokens once rendered.
# Also used by tests/integration/test_llama_runtime.py and bench/default_model.py.
SUPPORT_SYSTEM = (
    "You are the support assistant of Northwind Logistics, a freight forwarding company with offices in Lyon, "
    "Rotterdam and Montreal. You answer customers and colleagues politely and precisely. Keep answers short: a few "
    "sentences or a short list. When a customer pastes part of a contract, a customs form or an internal policy, "
    "summarise what it says in plain language, point out deadlines, amounts and obligations, and never invent "
    "clauses that are not in the text. If something is unclear, say which part is unclear and suggest contacting "
    "the account manager. Answer in the language of the question."
)
SUPPORT_DOCUMENT = (
    "Section 4.2, Claims for damaged goods. The customer shall notify Northwind Logistics in writing of any visible "
    "damage within three working days of delivery, and of any concealed damage within seven calendar days, "
    "attaching photographs of the goods and of the packaging, the delivery note signed with reservations, and the "
    "commercial invoice. Claims received after these periods will be considered only if the customer can show that "
    "the damage occurred while the goods were in the custody of Northwind Logistics or its subcontractors. The "
    "liability of Northwind Logistics is limited to 8.33 special drawing rights per kilogram of gross weight of the "
    "damaged goods, unless the customer declared a higher value before shipment and paid the corresponding "
    "insurance surcharge of 0.4 percent of the declared value. Damaged goods must be kept available for inspection "
    "for thirty days; disposing of them before the inspection voids the claim. Refunds are paid within forty-five "
    "days of the acceptance of the claim, by bank transfer to the account named on the invoice."
)
SUPPORT_QUESTION = "Hi, this is from our transport contract. Could you summarise it for me? What do I need to do?"


def support_messages(question: str = SUPPORT_QUESTION) -> list[dict]:
    return [{"role": "system", "content": SUPPORT_SYSTEM},
            {"role": "user", "content": f"{question}\n\n{SUPPORT_DOCUMENT}"}]


def render_default_prompt(messages: list[dict]) -> str:
    """The prompt text the router sends Triton for these messages (the catalogue's chat template, ChatML)."""
    entry = load_catalog([DEFAULT_CATALOG]).lookup(REAL_MODEL)
    return render_prompt(entry.chat_template, tuple(Message(m["role"], m["content"]) for m in messages),
                         entry.bos_token, entry.eos_token)


def default_gguf() -> Path:
    """The default model's GGUF, resolved from the default repository's model.json as the CPU backend does."""
    version_dir = DEFAULT_MODEL_REPOSITORY / "smollm2-135m-instruct" / "1"
    return resolve_gguf(json.loads((version_dir / "model.json").read_text())["model"], version_dir)


MAX_TOKENS = 48


@pytest.fixture(scope="module")
def tokenizer():
    """The model's own tokenizer (vocabulary only, no weights), to count tokens as the backend does."""
    import llama_cpp  # noqa: PLC0415 - only needed here

    llm = llama_cpp.Llama(model_path=str(default_gguf()), vocab_only=True, verbose=False)
    yield llm
    llm.close()


@pytest.fixture(scope="module")
def client(stack) -> openai.OpenAI:
    return openai.OpenAI(base_url=stack["base_url"], api_key=stack["api_key"], max_retries=0, timeout=120)


@pytest.fixture(scope="module")
def expected_prompt_tokens(tokenizer) -> int:
    n = len(tokenizer.tokenize(render_default_prompt(support_messages()).encode(), add_bos=True, special=True))
    assert n >= 250, n  # the point of this module: a chat-length prompt
    return n


def _check_usage(tokenizer, usage, content: str, finish_reason: str, prompt_tokens: int) -> None:
    assert usage.prompt_tokens == prompt_tokens >= 200
    assert 1 <= usage.completion_tokens <= MAX_TOKENS
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    if finish_reason == "length":
        assert usage.completion_tokens == MAX_TOKENS
    # The text re-tokenized is about as long as what was generated (the EOS counts as a token but has no text).
    retokenized = len(tokenizer.tokenize(content.encode(), add_bos=False, special=False))
    assert usage.completion_tokens - 1 - 8 <= retokenized <= usage.completion_tokens + 8


GREEDY = {"temperature": 0, "seed": 7}


@pytest.fixture(scope="module")
def greedy_answer(client, tokenizer, expected_prompt_tokens) -> str:
    raw = client.chat.completions.with_raw_response.create(
        model=REAL_MODEL, messages=support_messages(), max_tokens=MAX_TOKENS, temperature=0, seed=7)
    assert raw.http_response.status_code == 200
    r = raw.parse()
    choice = r.choices[0]
    assert r.model == REAL_MODEL and choice.message.role == "assistant"
    assert choice.message.content.strip() and choice.finish_reason in ("stop", "length")
    _check_usage(tokenizer, r.usage, choice.message.content, choice.finish_reason, expected_prompt_tokens)
    return choice.message.content


@pytest.mark.parametrize("seed", [None, 11, 12])
def test_non_streamed_completions(client, tokenizer, expected_prompt_tokens, greedy_answer, seed):
    """Default temperature (random, and seeded), one after the other on the same long prompt."""
    raw = client.chat.completions.with_raw_response.create(
        model=REAL_MODEL, messages=support_messages(), max_tokens=MAX_TOKENS,
        **({"seed": seed} if seed is not None else {}))
    assert raw.http_response.status_code == 200
    r = raw.parse()
    choice = r.choices[0]
    assert choice.message.role == "assistant" and choice.message.content.strip()
    assert choice.finish_reason in ("stop", "length")
    _check_usage(tokenizer, r.usage, choice.message.content, choice.finish_reason, expected_prompt_tokens)


def test_greedy_with_a_seed_is_reproducible_whatever_was_served_before(client, greedy_answer):
    """The engine reuses the KV cache of the previous prompt, unless a request has a seed: then it evaluates the
    prompt afresh (a position evaluated alone gets slightly different logits than in a batch, enough to flip a
    near-tie). So the same seeded greedy request answers the same right after itself and after another prompt."""
    answers = []
    for before in ([], support_messages(), [{"role": "user", "content": "Thanks!"}]):
        if before:
            client.chat.completions.create(model=REAL_MODEL, messages=before, max_tokens=1)
        answers.append(client.chat.completions.create(model=REAL_MODEL, messages=support_messages(),
                                                      max_tokens=MAX_TOKENS, **GREEDY).choices[0].message.content)
    assert answers == [greedy_answer] * 3


def _stream(client, **kw) -> tuple[str, list]:
    with client.chat.completions.with_streaming_response.create(
            model=REAL_MODEL, messages=support_messages(), max_tokens=MAX_TOKENS, stream=True, **kw) as raw:
        assert raw.http_response.status_code == 200
        assert raw.http_response.headers["content-type"].startswith("text/event-stream")
        chunks = list(raw.parse())  # the SDK stops at `data: [DONE]` and fails on an error event
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    return text, chunks


@pytest.mark.parametrize("kw", [
    pytest.param(GREEDY, id="greedy"),
    pytest.param({"seed": 21}, id="default-temperature"),
    pytest.param({}, id="default-temperature-unseeded"),
])
def test_streamed_completions_with_usage(client, tokenizer, expected_prompt_tokens, greedy_answer, kw):
    text, chunks = _stream(client, stream_options={"include_usage": True}, **kw)
    assert text.strip()
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for c in chunks if c.choices and c.choices[0].delta.content) >= 2  # incremental, not one blob
    finals = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert len(finals) == 1 and finals[0].choices[0].finish_reason in ("stop", "length")
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None and all(c.usage is None for c in chunks[:-1])
    _check_usage(tokenizer, last.usage, text, finals[0].choices[0].finish_reason, expected_prompt_tokens)
    if kw == GREEDY:
        assert text == greedy_answer  # streamed or not, the same greedy answer


def test_streamed_wire_format_ends_with_done(stack, client, greedy_answer):
    """The SSE stream itself, without the SDK: every event a chunk, then `data: [DONE]`; no usage unless asked."""
    body = {"model": REAL_MODEL, "messages": support_messages(), "max_tokens": MAX_TOKENS, "stream": True, **GREEDY}
    with httpx.stream("POST", stack["base_url"] + "/chat/completions", json=body, timeout=120,
                      headers={"Authorization": f"Bearer {stack['api_key']}"}) as resp:
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/event-stream")
        events = [line for line in resp.iter_lines() if line]
    assert events[-1] == "data: [DONE]" and all(e.startswith("data: ") for e in events)
    chunks = [json.loads(e.removeprefix("data: ")) for e in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" and "usage" not in c for c in chunks)
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks) == greedy_answer


CAPITAL = [{"role": "user", "content": "What is the capital of France?"}]


def test_logit_bias_forces_a_token(client, tokenizer):
    """+100 on one token: llama.cpp samples nothing else (the bias is added before every other sampler)."""
    banana = tokenizer.tokenize(b" banana", add_bos=False, special=False)
    assert len(banana) == 1
    r = client.chat.completions.create(model=REAL_MODEL, messages=CAPITAL, max_tokens=6, temperature=0,
                                       logit_bias={str(banana[0]): 100})
    assert r.choices[0].message.content.split() == ["banana"] * 6 and r.choices[0].finish_reason == "length"
    # The same on /v1/completions, streamed.
    chunks = list(client.completions.create(model=REAL_MODEL, prompt="The capital of France is", max_tokens=4,
                                            temperature=0, logit_bias={str(banana[0]): 100}, stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices).split() == ["banana"] * 4


def test_logit_bias_bans_a_token(client, tokenizer):
    """-100 on the greedy answer's first token: the answer starts with the runner-up instead."""
    def first_token(**kw):
        r = client.chat.completions.create(model=REAL_MODEL, messages=CAPITAL, max_tokens=2, logprobs=True,
                                           top_logprobs=2, **GREEDY, **kw)
        return r.choices[0].logprobs.content[0]

    first = first_token()
    best, runner_up = (t.token for t in first.top_logprobs)
    assert first.token == best
    (token_id,) = tokenizer.tokenize(best.encode(), add_bos=False, special=True)
    assert first_token(logit_bias={str(token_id): -100}).token == runner_up


@pytest.mark.parametrize("stream", [False, True])
def test_logit_bias_outside_the_vocabulary_is_a_400(client, stream):
    """The backend's refusal comes before any output: a 400 naming the field, streamed or not."""
    with pytest.raises(openai.BadRequestError) as e:
        list(client.completions.create(model=REAL_MODEL, prompt="Hi", max_tokens=2, stream=True,
                                       logit_bias={"99999999": 5})) if stream else \
            client.chat.completions.create(model=REAL_MODEL, messages=CAPITAL, max_tokens=2,
                                           logit_bias={"99999999": 5})
    assert e.value.body["param"] == "logit_bias" and "vocabulary" in e.value.body["message"]


def test_model_still_listed_after_all_that(client, stack):
    """Nothing crashed along the way: Triton still reports the model ready, so /v1/models lists it."""
    assert REAL_MODEL in {m.id for m in client.models.list()}
    r = client.chat.completions.create(model=REAL_MODEL, messages=[{"role": "user", "content": "Thanks!"}],
                                       max_tokens=4)
    assert r.choices[0].finish_reason in ("stop", "length")
