"""POST /v1/embeddings with the real all-MiniLM-L6-v2 through the whole stack (Envoy, auth, catalog, metering, router)
and straight to Triton (the same tensors, one ModelInfer), for 1 and 64 inputs per request (floats as JSON numbers, and
as base64). Prints p50/p99 latency,
inputs/s (one request at a time) and the gateway's added latency (through-the-stack minus direct, at p50).

    .venv/bin/python -m bench.embeddings [--requests-1 60] [--requests-64 12]

Starts its own stack (like the e2e tests). Both paths run in one process, alternating request by request, on
sentences of ~16 tokens that differ from one request to the next.
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
from llmaas.router.embeddings import infer_request, read_response
from llmaas.router.triton import TritonReplica
from llmaas.stack.paths import DEFAULT_CATALOG

from tests.support.stack import running_stack

MODEL = "all-minilm:22m"


def texts(request: int, n: int) -> list[str]:
    return [f"Ticket {request}-{i}: the customer cannot sign in and asks how to reset the password of account {i}."
            for i in range(n)]


def pct(values: list[float], p: int) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def measure(stack: dict, inputs: int, requests: int) -> dict[str, list[float]]:
    triton_model = load_catalog([DEFAULT_CATALOG]).lookup(MODEL).triton_model
    triton = TritonReplica(stack["triton_grpc"])
    samples: dict[str, list[float]] = {"gateway": [], "gateway-b64": [], "direct": []}
    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=120,
                                 headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:
        for warm in range(2):  # connections, the model's first batch
            await http.post("/embeddings", json={"model": MODEL, "input": texts(-warm, inputs)})
        for r in range(requests):
            batch = texts(r, inputs)
            for path in (("gateway", "gateway-b64", "direct") if r % 2 else ("direct", "gateway-b64", "gateway")):
                start = time.perf_counter()
                if path.startswith("gateway"):
                    response = await http.post("/embeddings", json={
                        "model": MODEL, "input": batch, "encoding_format": "base64" if path != "gateway" else "float"})
                    assert response.status_code == 200, response.text
                    assert len(response.json()["data"]) == inputs
                else:
                    result = await triton.infer(infer_request(triton_model, f"bench-{r}", tuple(batch)), 120)
                    assert len(read_response(result, inputs)[1]) == inputs
                samples[path].append(time.perf_counter() - start)
    await triton.close()
    return samples


async def main(requests_1: int, requests_64: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        print(f"model {MODEL}, one request at a time, both paths alternating")
        print(f"{'inputs':>6} {'path':>8} {'p50 ms':>8} {'p99 ms':>8} {'inputs/s':>9}")
        for inputs, requests in ((1, requests_1), (64, requests_64)):
            samples = await measure(stack, inputs, requests)
            for path, values in samples.items():
                print(f"{inputs:>6} {path:>8} {pct(values, 50) * 1000:>8.1f} {pct(values, 99) * 1000:>8.1f} "
                      f"{inputs / statistics.mean(values):>9.1f}")
            added = (pct(samples["gateway"], 50) - pct(samples["direct"], 50)) * 1000
            added_b64 = (pct(samples["gateway-b64"], 50) - pct(samples["direct"], 50)) * 1000
            print(f"{inputs:>6} gateway adds {added:.1f} ms at p50 ({added_b64:.1f} ms with base64)")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests-1", type=int, default=60)
    parser.add_argument("--requests-64", type=int, default=12)
    args = parser.parse_args()
    asyncio.run(main(args.requests_1, args.requests_64))
