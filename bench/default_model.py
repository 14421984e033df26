"""The real default model (SmolLM2-135M-Instruct, llama.cpp on CPU) streamed through the whole stack (Envoy, auth,
guard, catalog, metering, router) and straight to Triton, at concurrency 1 and 4, on a chat-length prompt (a support
desk's system prompt and a pasted contract clause, ~370 tokens). Prints time to first token p50/p90, output
tokens/s per request and in aggregate, and the ratios through-the-stack / direct.

    .venv/bin/python -m bench.default_model [--requests 12] [--max-tokens 64]

Starts its own stack (like the e2e tests). Both paths run in one process, interleaved per concurrency level (A B B A
halves), greedy, on the same prompts (each request has its own ticket number: no two prompts are identical, and only
the system prompt's KV cache is reused from one request to the next, as a real support desk would see). The llama.cpp
engine generates one sequence at a time and queues the others inside Triton: at concurrency 4 the time to first
token includes that queueing, and the aggregate rate cannot exceed the single-sequence rate.
"""

from __future__ import annotations

import argparse
import asyncio
import inspect
import itertools
import json
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
from llmaas.catalog.entries import load_catalog
from llmaas.router.triton import TritonReplica
from llmaas.stack.paths import DEFAULT_CATALOG

from tests.e2e.test_default_model import SUPPORT_QUESTION, render_default_prompt, support_messages
from tests.support.stack import REAL_MODEL, running_stack


@dataclass
class Sample:
    ttft: float  # seconds from sending to the first non-empty text
    duration: float  # seconds from sending to the end of the stream
    tokens: int  # output tokens (as counted by the backend: an EOS counts, as in vLLM)

    @property
    def decode_rate(self) -> float:
        """Output tokens/s of this request once its first token is out (its own generation speed)."""
        after_first = self.duration - self.ttft
        return (self.tokens - 1) / after_first if self.tokens > 1 and after_first > 0 else 0.0


@dataclass
class Run:
    samples: list[Sample]
    wall: float

    @property
    def aggregate_rate(self) -> float:
        return sum(s.tokens for s in self.samples) / self.wall


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1]


async def _measure(send, count: int, concurrency: int) -> Run:
    samples: list[Sample] = []
    queue = iter(range(count))

    async def worker():
        for _ in queue:
            samples.append(await send())

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return Run(samples, time.perf_counter() - t0)


async def run(stack: dict, requests: int, max_tokens: int) -> None:
    entry = load_catalog([DEFAULT_CATALOG]).lookup(REAL_MODEL)
    tickets = itertools.count(10_001)

    def messages() -> list[dict]:
        # A different ticket at the start of the user's message: the guard's repetition rule would refuse 30
        # identical prompts in a row, and llama.cpp would otherwise reuse the whole prompt's KV cache.
        return support_messages(f"Ticket NW-{next(tickets)}. {SUPPORT_QUESTION}")

    triton = TritonReplica(stack["triton_grpc"])
    sampling = {"max_tokens": max_tokens, "temperature": 0}
    body = {"model": REAL_MODEL, "max_tokens": max_tokens, "temperature": 0, "stream": True,
            "stream_options": {"include_usage": True}}
    prompt_tokens: list[int] = []
    limits = httpx.Limits(max_connections=16, max_keepalive_connections=16)
    async with httpx.AsyncClient(base_url=stack["base_url"], limits=limits, timeout=300,
                                 headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:

        async def via_stack() -> Sample:
            t0 = time.perf_counter()
            ttft, tokens = None, 0
            async with http.stream("POST", "/chat/completions", json={**body, "messages": messages()}) as r:
                r.raise_for_status()
                async for line in r.aiter_lines():
                    if not line.startswith("data: ") or line == "data: [DONE]":
                        continue
                    chunk = json.loads(line[len("data: "):])
                    if ttft is None and chunk["choices"] and chunk["choices"][0]["delta"].get("content"):
                        ttft = time.perf_counter() - t0
                    if chunk.get("usage"):
                        tokens = chunk["usage"]["completion_tokens"]
                        prompt_tokens.append(chunk["usage"]["prompt_tokens"])
            end = time.perf_counter() - t0
            return Sample(ttft if ttft is not None else end, end, tokens)

        request_ids = itertools.count()
        # Straight to Triton means without the router's watchdog too (a stream silent for a while gets a one-token
        # canary request, which queues in the same engine): that is part of what the stack costs.
        no_watchdog = {"watchdog": False} if "watchdog" in inspect.signature(triton.generate).parameters else {}

        async def direct() -> Sample:
            prompt = render_default_prompt(messages())
            t0 = time.perf_counter()
            ttft, tokens = None, 0
            async for delta in triton.generate(entry.triton_model, prompt, sampling,
                                               f"bench-{next(request_ids)}", **no_watchdog):
                if ttft is None and delta.text:
                    ttft = time.perf_counter() - t0
                tokens += delta.output_tokens or 0
            end = time.perf_counter() - t0
            return Sample(ttft if ttft is not None else end, end, tokens)

        for send in (via_stack, direct):  # warm-up: model pages, connections, the router's caches
            await _measure(send, 2, 1)
        prompt_tokens.clear()

        print(f"model {REAL_MODEL} (Triton model {entry.triton_model}), {requests} streamed requests per path and "
              f"level, max_tokens={max_tokens}, temperature 0")
        header = (f"{'conc.':>5} {'path':>7} {'TTFT p50 ms':>11} {'TTFT p90 ms':>11} {'tok/s/req p50':>13} "
                  f"{'aggr. tok/s':>11} {'out tok/req':>11}")
        print(header)
        first_half = requests // 2
        for concurrency in (1, 4):
            runs: dict[str, list[Run]] = {"stack": [], "direct": []}
            # A B B A: both paths see the machine's drift alike.
            for name, count in (("stack", first_half), ("direct", first_half),
                                ("direct", requests - first_half), ("stack", requests - first_half)):
                runs[name].append(await _measure(via_stack if name == "stack" else direct, count, concurrency))
            stats = {}
            for name, parts in runs.items():
                samples = [s for part in parts for s in part.samples]
                ttfts = [s.ttft * 1000 for s in samples]
                aggregate = sum(s.tokens for s in samples) / sum(part.wall for part in parts)
                stats[name] = (_pct(ttfts, 50), _pct(ttfts, 90), _pct([s.decode_rate for s in samples], 50),
                               aggregate, statistics.mean(s.tokens for s in samples))
                s = stats[name]
                print(f"{concurrency:>5} {name:>7} {s[0]:11.0f} {s[1]:11.0f} {s[2]:13.1f} {s[3]:11.1f} {s[4]:11.1f}")
            a, b = stats["stack"], stats["direct"]
            print(f"{concurrency:>5} {'ratio':>7} {a[0] / b[0]:11.2f} {a[1] / b[1]:11.2f} {a[2] / b[2]:13.2f} "
                  f"{a[3] / b[3]:11.2f}   (stack / direct)")
        print(f"prompt: {min(prompt_tokens)}-{max(prompt_tokens)} tokens (system + user, ChatML). At concurrency 4 "
              "the llama.cpp engine still generates one sequence at a time: the others wait in Triton, so TTFT "
              "includes that queueing and the aggregate rate stays near the single-sequence rate.")
    await triton.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=12, help="streamed requests per path and concurrency level")
    parser.add_argument("--max-tokens", type=int, default=64)
    args = parser.parse_args()
    if args.requests < 4:
        parser.error("--requests must be at least 4 (two per half, for percentiles)")
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        asyncio.run(run(stack, args.requests, args.max_tokens))


if __name__ == "__main__":
    main()
