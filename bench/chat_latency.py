"""The cost of the whole request path: the same chat request through Envoy (auth, guard, catalog, metering, router)
and straight to Triton, at concurrency 1 and 32. Prints p50/p99 latency and requests/s for both, and their ratio.

    .venv/bin/python -m bench.chat_latency [--requests 300] [--max-tokens 16]

Starts its own stack (like the e2e tests) and uses the deterministic test model, so that what is measured is the
platform, not the model. Both sides run in one process, interleaved per concurrency level: compare ratios, the
absolute numbers move with the machine's load.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from llmaas.catalog.entries import load_catalog
from llmaas.router.params import Message
from llmaas.router.template import render_prompt
from llmaas.router.triton import TritonReplica

from tests.support.stack import E2E_DIR, TEST_MODEL, running_stack

PROMPT = "Summarise the benefits of running language models on your own infrastructure."


async def _measure(send, requests: int, concurrency: int) -> tuple[list[float], float]:
    latencies: list[float] = []
    queue = iter(range(requests))

    async def worker():
        for _ in queue:
            t0 = time.perf_counter()
            await send()
            latencies.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return latencies, requests / (time.perf_counter() - t0)


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


async def run(stack: dict, requests: int, max_tokens: int) -> None:
    entry = load_catalog([E2E_DIR / "catalog.yaml"]).lookup(TEST_MODEL)
    prompt = render_prompt(entry.chat_template, (Message("user", PROMPT),), entry.bos_token, entry.eos_token)
    triton = TritonReplica(stack["triton_grpc"])
    body = {"model": TEST_MODEL, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": max_tokens}
    limits = httpx.Limits(max_connections=64, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=stack["base_url"], limits=limits, timeout=120,
                                 headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:
        variants = iter(range(10**9))

        async def via_envoy():
            # Not 30 identical prompts in a row: the guard's repetition rule (as in the reference) would refuse them.
            content = f"{PROMPT} ({next(variants) % 7})"
            r = await http.post("/chat/completions", json={**body, "messages": [{"role": "user", "content": content}]})
            r.raise_for_status()

        counter = iter(range(10**9))

        async def direct():
            async for _ in triton.generate(entry.triton_model, prompt, {"max_tokens": max_tokens},
                                           f"bench-{next(counter)}"):
                pass

        for send in (via_envoy, direct):  # warm-up
            await _measure(send, 20, 4)
        print(f"{requests} requests per run, max_tokens={max_tokens}, model {TEST_MODEL}")
        print(f"{'concurrency':>11} {'path':>8} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8}")
        for concurrency in (1, 32):
            results = {}
            for name, send in (("envoy", via_envoy), ("triton", direct)):
                lat, rps = await _measure(send, requests, concurrency)
                results[name] = (_pct(lat, 50), _pct(lat, 99), rps)
                print(f"{concurrency:>11} {name:>8} {results[name][0]:8.2f} {results[name][1]:8.2f} {rps:8.1f}")
            e, t = results["envoy"], results["triton"]
            print(f"{concurrency:>11} {'ratio':>8} {e[0] / t[0]:8.2f} {e[1] / t[1]:8.2f} {e[2] / t[2]:8.2f}"
                  "   (envoy / triton)")
    await triton.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--max-tokens", type=int, default=16)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        asyncio.run(run(stack, args.requests, args.max_tokens))


if __name__ == "__main__":
    main()
