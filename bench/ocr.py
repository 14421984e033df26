"""OCR: PP-OCRv4 (onnxruntime in Triton, CPU) reading a drawn page (1000 x 560 px, a title and three lines), through
the whole stack (Envoy, auth, catalog, guard, metering, router: the data URI decoded and checked, the reservation,
the settlement) and straight to Triton (ModelInfer with the PNG), interleaved (A B B A). Prints each path's median
latency and the gateway's added latency (median of the per-round differences).

    .venv/bin/python -m bench.ocr [--rounds 10]

Starts its own stack (like the e2e tests).
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
from llmaas.common.triton_client import triton_channel
from llmaas.router.ocr import Page, infer_request, read_result
from llmaas.stack.paths import DEFAULT_CATALOG
from tritonclient.grpc import service_pb2_grpc

from tests.support.pages import data_uri, page
from tests.support.stack import running_stack

MODEL = "ppocr:v4"


async def run(stack: dict, rounds: int) -> None:
    png = page()
    entry = load_catalog([DEFAULT_CATALOG]).lookup(MODEL)
    stub = service_pb2_grpc.GRPCInferenceServiceStub(triton_channel(stack["triton_grpc"]))
    body = {"model": MODEL, "messages": [{"role": "user", "content": [
        {"type": "text", "text": "Convert the document to markdown."},
        {"type": "image_url", "image_url": {"url": data_uri(png)}}]}]}

    async def direct() -> float:
        t = time.perf_counter()
        read_result(await stub.ModelInfer(infer_request(entry.triton_model, "bench", Page(png, 1000, 560)),
                                          timeout=120))
        return time.perf_counter() - t

    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=120,
                                 headers={"Authorization": f"Bearer {stack['api_key']}"}) as http:
        async def gateway() -> float:
            t = time.perf_counter()
            r = await http.post("/chat/completions", json=body)
            r.raise_for_status()
            return time.perf_counter() - t

        await direct()
        await gateway()
        times: dict[str, list[float]] = {"direct": [], "gateway": []}
        for i in range(rounds):
            for send in ((direct, gateway) if i % 2 == 0 else (gateway, direct)):
                times["direct" if send is direct else "gateway"].append(await send())
    print(f"page: 1000 x 560 PNG, {len(png) / 1000:.0f} KB; {rounds} rounds per path, interleaved")
    for name, values in times.items():
        print(f"  {name:8s} median {statistics.median(values) * 1000:6.0f} ms  (min {min(values) * 1000:.0f}, "
              f"max {max(values) * 1000:.0f})")
    added = sorted(g - d for g, d in zip(times["gateway"], times["direct"], strict=True))
    print(f"  gateway added latency: median {statistics.median(added) * 1000:.0f} ms "
          f"(range {added[0] * 1000:.0f} .. {added[-1] * 1000:.0f} ms)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        asyncio.run(run(stack, args.rounds))


if __name__ == "__main__":
    main()
