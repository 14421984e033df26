"""POST /v2/rerank with the local similarity reranker (all-minilm-rerank:22m) through the whole stack and straight to
Triton: p50/p99 for 10 and 100 documents (the gateway's added latency at p50), then its quality on the labelled set
tests/data/rerank_labelled.json (top-1 accuracy and mean reciprocal rank).

    .venv/bin/python -m bench.rerank [--requests 12]

Starts its own stack (like the e2e tests); both paths alternate request by request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path

import httpx
from llmaas.catalog.entries import load_catalog
from llmaas.router.rerank import infer_request, read_response
from llmaas.router.triton import TritonReplica
from llmaas.stack.paths import DEFAULT_CATALOG

from bench.embeddings import pct
from tests.support.stack import running_stack

MODEL = "all-minilm-rerank:22m"
LABELLED = Path(__file__).parents[1] / "tests" / "data" / "rerank_labelled.json"


def documents(request: int, n: int) -> list[str]:
    return [f"Document {request}-{i}: the delivery of order {i} was delayed by the carrier, and the customer asks "
            f"for a refund of the shipping costs." for i in range(n)]


async def latency(http: httpx.AsyncClient, triton: TritonReplica, triton_model: str, n: int, requests: int) -> None:
    samples: dict[str, list[float]] = {"gateway": [], "direct": []}
    query = "When is a delayed delivery refunded?"
    await http.post("/v2/rerank", json={"model": MODEL, "query": query, "documents": documents(-1, n)})
    for r in range(requests):
        docs = documents(r, n)
        for path in (("gateway", "direct") if r % 2 else ("direct", "gateway")):
            start = time.perf_counter()
            if path == "gateway":
                response = await http.post("/v2/rerank", json={"model": MODEL, "query": query, "documents": docs})
                assert response.status_code == 200, response.text
            else:
                result = await triton.infer(infer_request(triton_model, f"bench-{r}", query, tuple(docs)), 120)
                read_response(result, n)
            samples[path].append(time.perf_counter() - start)
    for path, values in samples.items():
        print(f"{n:>9} {path:>8} {pct(values, 50) * 1000:>8.1f} {pct(values, 99) * 1000:>8.1f}")
    print(f"{n:>9} gateway adds {(pct(samples['gateway'], 50) - pct(samples['direct'], 50)) * 1000:.1f} ms at p50")


async def quality(http: httpx.AsyncClient) -> None:
    items = json.loads(LABELLED.read_text())["items"]
    first, reciprocal = 0, 0.0
    for item in items:
        body = (await http.post("/v2/rerank", json={"model": MODEL, "query": item["query"],
                                                    "documents": item["documents"]})).json()
        rank = [r["index"] for r in body["results"]].index(item["relevant"]) + 1
        first += rank == 1
        reciprocal += 1 / rank
    print(f"labelled set: {len(items)} queries x 5 documents, top-1 accuracy {first}/{len(items)}, "
          f"MRR {reciprocal / len(items):.3f}")


async def main(requests: int) -> None:
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        triton_model = load_catalog([DEFAULT_CATALOG]).lookup(MODEL).triton_model
        triton = TritonReplica(stack["triton_grpc"])
        origin = stack["base_url"].removesuffix("/v1")
        async with httpx.AsyncClient(base_url=origin, timeout=120,
                                     headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:
            print(f"model {MODEL}, one request at a time\n{'documents':>9} {'path':>8} {'p50 ms':>8} {'p99 ms':>8}")
            for n in (10, 100):
                await latency(http, triton, triton_model, n, requests)
            await quality(http)
        await triton.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=12)
    asyncio.run(main(parser.parse_args().requests))
