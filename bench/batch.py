"""The Batch API on the deterministic test model through the whole stack: lines per second of a chat batch, the
interactive chat latency (p50/p99, one request at a time) without and with that batch running, and the time a killed
router takes to resume its batch (SIGKILL, restarted by the supervisor, until the batch's next line completes).

    .venv/bin/python -m bench.batch [--lines 2000] [--interactive 150] [--max-tokens 16] [--no-kill]

Starts its own stack (like the e2e tests). The issue asks for 10,000 lines: `--lines 10000` (about 4 minutes on the
shared 2-core machine; the default keeps the run near one minute).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import signal
import tempfile
import time
from pathlib import Path

import httpx
import openai

from tests.e2e.test_metering import admin, new_key, new_tenant
from tests.support.stack import TEST_MODEL, _port_open, live_pids, running_stack


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def interactive(stack: dict, key: str, n: int, max_tokens: int) -> list[float]:
    """n chat requests one after the other: their latencies in ms."""
    samples = []
    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as http:
        for i in range(n):
            start = time.perf_counter()
            r = await http.post("/chat/completions", json={
                "model": TEST_MODEL, "max_tokens": max_tokens,
                "messages": [{"role": "user", "content": f"Interactive question {i}: count to three."}]})
            assert r.status_code == 200, r.text
            samples.append((time.perf_counter() - start) * 1000)
    return samples


def batch_file(lines: int, max_tokens: int) -> bytes:
    return b"".join(json.dumps({"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
                                "body": {"model": TEST_MODEL, "max_tokens": max_tokens, "messages": [
                                    {"role": "user", "content": f"Batch document {i}: summarise it."}]}}).encode()
                     + b"\n" for i in range(lines))


def completed(client: openai.OpenAI, batch_id: str) -> tuple[str, int]:
    while True:
        try:
            b = client.batches.retrieve(batch_id)
            return b.status, b.request_counts.completed
        except (openai.APIConnectionError, openai.APIStatusError):
            time.sleep(0.05)  # the router is restarting


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--lines", type=int, default=2000)
    parser.add_argument("--interactive", type=int, default=150)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--no-kill", action="store_true", help="skip the kill-and-resume measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        tenant_id = new_tenant(stack, "bench-batch")
        admin(stack, "PUT", f"/tenants/{tenant_id}/tier", json={"tier": "monthly"})
        _, key = new_key(stack, tenant_id)
        client = openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=60)
        await interactive(stack, key, 10, args.max_tokens)  # warm-up
        alone = await interactive(stack, key, args.interactive, args.max_tokens)

        f = client.files.create(file=("bench.jsonl", io.BytesIO(batch_file(args.lines, args.max_tokens))),
                                purpose="batch")
        batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
        while completed(client, batch.id)[1] < 20:
            time.sleep(0.05)
        started, start_count = time.monotonic(), completed(client, batch.id)[1]
        during = await interactive(stack, key, args.interactive, args.max_tokens)
        status, count = completed(client, batch.id)

        resume = None
        if not args.no_kill and status == "in_progress" and count < args.lines * 0.9:
            os.kill(live_pids(stack)["router"], signal.SIGKILL)
            killed = time.monotonic()
            before = completed(client, batch.id)[1]
            port = int(stack["services"]["router"].rsplit(":", 1)[1])
            while not _port_open(port):
                time.sleep(0.02)
            while completed(client, batch.id)[1] <= before:
                time.sleep(0.02)
            resume = time.monotonic() - killed

        while (state := completed(client, batch.id))[0] not in ("completed", "failed", "expired", "cancelled"):
            time.sleep(0.2)
        done = client.batches.retrieve(batch.id)
        elapsed = done.completed_at - done.in_progress_at if done.in_progress_at else 0
        rate_during = (count - start_count) / (time.monotonic() - started) if count > start_count else 0.0
        print(f"batch: {args.lines} chat lines (max_tokens {args.max_tokens}) on {TEST_MODEL}: {state[0]}, "
              f"{done.request_counts.completed} completed, {done.request_counts.failed} failed")
        print(f"  {args.lines / max(elapsed, 1):.1f} lines/s overall ({elapsed} s from in_progress to completed"
              f"{', a router kill included' if resume else ''}); {rate_during:.1f} lines/s while interactive "
              f"requests ran")
        print(f"interactive chat, one at a time ({args.interactive} requests, max_tokens {args.max_tokens}):")
        print(f"  without a batch: p50 {pct(alone, 50):.1f} ms  p99 {pct(alone, 99):.1f} ms")
        print(f"  with the batch:  p50 {pct(during, 50):.1f} ms  p99 {pct(during, 99):.1f} ms  "
              f"(ratio p50 {pct(during, 50) / pct(alone, 50):.2f}, p99 {pct(during, 99) / pct(alone, 99):.2f})")
        if resume is not None:
            print(f"router SIGKILL mid-batch: the batch's next line completed {resume:.1f} s after the kill "
                  f"(supervisor restart, router start, batch resumed)")


if __name__ == "__main__":
    asyncio.run(main())
