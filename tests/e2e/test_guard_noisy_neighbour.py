"""No noisy neighbour through the guard: tenant A floods the stack with the prompts that cost the guard most while
tenant B sends ordinary requests; none of B's requests fails and B's p99 stays within a stated bound of its own
p99 measured alone just before.

A's prompts are the worst found with a bench/guard_rules.py-like measurement (cost per character, on 2 cores), half
of them as tool results (the document head also scores every paragraph): Latin words full of Cyrillic look-alikes,
invisibles and leetspeak, long base64 tokens, hex pairs. Through the stack, they are the biggest the router accepts
for the test model (its context of 4096 tokens at 16 bytes a token at most: 64 KB, 16 chunks for the guard). What
the router's size limits refuse never reaches the guard, so A also calls the guard itself, as a router without
those limits would, with 4 and 24 MB texts: far beyond the guard's analysed bound
(llmaas.guard.budget.MAX_ANALYSED_CHARS: heads and tails analysed, `oversized`). Before the budget, one 3.9 MB
prompt held the guard for about 8 s and every other tenant's check timed out (503).
"""

from __future__ import annotations

import base64
import random
import statistics
import threading
import time

import grpc
import httpx
import openai
import pytest
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc

from tests.e2e.test_guard import new_tenant
from tests.e2e.test_metering import admin
from tests.support.service_auth import new_request_id, tenant_metadata
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

FLOOD_SECONDS = 20.0
FLOODERS = 4  # tenant A's concurrent connections through the stack
DIRECT_FLOODERS = 2  # and straight to the guard
BASELINE_REQUESTS = 60
# B's p99 under the flood may be at most this many times its p99 alone, plus this many seconds (both measured on
# 2 cores shared with other stacks; see the README's guard section for the numbers).
BOUND_FACTOR = 3.0
BOUND_SECONDS = 0.5


def _mixed(rng: random.Random, n: int) -> str:
    """Latin words with Cyrillic look-alikes, zero-width characters and leetspeak inside: every normalisation step
    has work on every word. n: UTF-8 bytes."""
    alphabet = ["а", "е", "о", "р", "с", "a", "e", "o", "1", "3", "0", "$", "\u200b", "é", "x", "n", "t"]
    words, size = [], 0
    while True:
        word = "".join(rng.choice(alphabet) for _ in range(rng.randint(3, 9)))
        size += len(word.encode()) + 1
        if size > n:
            return " ".join(words)
        words.append(word)


def _base64_words(rng: random.Random, n: int) -> str:
    return " ".join(base64.b64encode(rng.randbytes(48)).decode() for _ in range(n // 65))


def _hex_pairs(rng: random.Random, n: int) -> str:
    return " ".join(f"{rng.randrange(256):02x}" for _ in range(n // 3))


# The biggest prompt the router accepts for the test model with max_tokens 4, less the other messages: bytes.
ACCEPTED_BYTES = 60_000


def worst_prompts() -> list[str]:
    rng = random.Random(20)
    return [make(rng, ACCEPTED_BYTES) for make in (_mixed, _base64_words, _hex_pairs)]


def huge_texts() -> list[str]:
    rng = random.Random(24)
    block = _mixed(rng, 1 << 20)
    return [_base64_words(rng, 4 << 20), block * 4, block * 24]


def _flood_guard(stack, tenant_id: str, texts: list[str], stop: threading.Event, outcomes: list[str],
                 seed: int) -> None:
    rng = random.Random(seed)
    sources = (guard_pb2.PART_SOURCE_USER, guard_pb2.PART_SOURCE_TOOL_RESULT)
    with grpc.insecure_channel(stack["services"]["guard"], options=[
            ("grpc.max_send_message_length", 64 << 20)]) as channel:
        guard = guard_pb2_grpc.GuardInternalServiceStub(channel)
        while not stop.is_set():
            request_id = new_request_id()
            request = guard_pb2.CheckPromptRequest(tenant_id=tenant_id, request_id=request_id, parts=[
                guard_pb2.PromptPart(source=rng.choice(sources), text=rng.choice(texts))])
            md = tenant_metadata(stack, "guard", tenant_id, request_id=request_id)
            try:
                r = guard.CheckPrompt(request, metadata=md, timeout=5)  # the router's deadline
                outcomes.append(",".join(sorted({f.reason for f in r.findings if f.layer == "limits"})) or "none")
            except grpc.RpcError as e:
                outcomes.append(e.code().name)


def _flood(stack, key: str, prompts: list[str], stop: threading.Event, outcomes: list[int], seed: int) -> None:
    rng = random.Random(seed)
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            text = rng.choice(prompts)
            messages = ([{"role": "user", "content": "Summarise the page."},
                         {"role": "assistant", "content": "Fetching it."},
                         {"role": "tool", "tool_call_id": "call_1", "content": text}] if rng.random() < 0.5
                        else [{"role": "user", "content": text}])
            try:
                r = client.post(f"{stack['base_url']}/chat/completions", headers={"Authorization": f"Bearer {key}"},
                                json={"model": TEST_MODEL, "messages": messages, "max_tokens": 4})
                outcomes.append(r.status_code)
            except httpx.HTTPError:
                outcomes.append(0)


def _b_latencies(client: openai.OpenAI, n: int | None = None, stop: threading.Event | None = None) -> list[float]:
    latencies = []
    i = 0
    while (n is not None and i < n) or (stop is not None and not stop.is_set()):
        t0 = time.perf_counter()
        r = client.chat.completions.create(model=TEST_MODEL, max_tokens=4, messages=[
            {"role": "user", "content": f"What is the capital of France? Question {i}."}])
        latencies.append(time.perf_counter() - t0)
        assert r.choices[0].message.content is not None
        i += 1
    return latencies


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_a_flood_of_worst_case_prompts_does_not_slow_another_tenant(stack):
    tenant_a, key_a = new_tenant(stack)
    tenant_b, key_b = new_tenant(stack)
    # B measures latency, not its own rate limit: at ~20 ms a request, 20 s of flood is more than tier 1's 1,000 a
    # minute. A stays on tier 1 (its 429s are among the clear answers it may get).
    admin(stack, "PUT", f"/tenants/{tenant_b}/tier", json={"tier": "monthly"})
    # max_retries=0: a failure of B is a failure of the test, never hidden by the SDK's retries.
    client = openai.OpenAI(base_url=stack["base_url"], api_key=key_b, max_retries=0, timeout=30)
    _b_latencies(client, 10)  # warm-up (connections, caches)
    alone = _b_latencies(client, BASELINE_REQUESTS)

    prompts, huge = worst_prompts(), huge_texts()
    stop, outcomes, direct = threading.Event(), [], []
    flooders = [threading.Thread(target=_flood, args=(stack, key_a, prompts, stop, outcomes, i), daemon=True)
                for i in range(FLOODERS)]
    flooders += [threading.Thread(target=_flood_guard, args=(stack, tenant_a, huge, stop, direct, i), daemon=True)
                 for i in range(DIRECT_FLOODERS)]
    for t in flooders:
        t.start()
    time.sleep(2.0)  # the flood is on: A's first prompts are in the guard
    b_stop = threading.Event()
    threading.Timer(FLOOD_SECONDS, b_stop.set).start()
    try:
        flooded = _b_latencies(client, stop=b_stop)  # raises (fails the test) on any error of B's
    finally:
        stop.set()
        for t in flooders:
            t.join(timeout=90)

    bound = BOUND_FACTOR * _p(alone, 99) + BOUND_SECONDS
    statuses = {s: outcomes.count(s) for s in sorted(set(outcomes))}
    verdicts = {s: direct.count(s) for s in sorted(set(direct))}
    print(f"\nnoisy neighbour: tenant A sent {len(outcomes)} worst-case prompts of "
          f"{min(len(p.encode()) for p in prompts) / 1e3:.0f}-{max(len(p.encode()) for p in prompts) / 1e3:.0f} KB "
          f"through the stack from {FLOODERS} connections (statuses {statuses}) and {len(direct)} texts of "
          f"{', '.join(f'{len(t.encode()) / 1e6:.0f}' for t in huge)} MB to the guard from {DIRECT_FLOODERS} "
          f"(limit findings {verdicts}); tenant B: alone p50 {statistics.median(alone) * 1e3:.0f} ms, "
          f"p99 {_p(alone, 99) * 1e3:.0f} ms ({len(alone)} requests); during the flood p50 "
          f"{statistics.median(flooded) * 1e3:.0f} ms, p99 {_p(flooded, 99) * 1e3:.0f} ms, max "
          f"{max(flooded) * 1e3:.0f} ms ({len(flooded)} requests, 0 failed); bound {bound * 1e3:.0f} ms "
          f"({BOUND_FACTOR:g} x p99 alone + {BOUND_SECONDS * 1e3:.0f} ms)")
    assert len(flooded) >= 20
    assert _p(flooded, 99) <= bound
    # A got clear answers (refused as oversized or flagged, 429 when too many of its analyses were in progress),
    # never a 5xx.
    assert outcomes and all(400 <= s < 500 or s == 200 for s in outcomes), statuses
    # The huge texts got a verdict in time (oversized: refused under enforce), or a 429 for too many at once.
    assert direct and set(direct) <= {"oversized", "analysis_incomplete,oversized", "RESOURCE_EXHAUSTED"}, verdicts
