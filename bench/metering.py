"""The cost of metering on the request path: one reserve + settle per request, and the ledger's sustained write rate.

    .venv/bin/python -m bench.metering [--requests 2000] [--database-url sqlite:///...|postgresql://...]

Two measurements, each with a key quota and the default tier (so every request touches 5 limit windows):
- `ledger`: the Ledger in this process, one request after another: what one reserve and one settle transaction cost.
- `grpc`: the real metering service (`python -m llmaas.metering`, its own process) called over gRPC like the router
  does, at concurrency 1 and 32: per-request reserve + settle latency and requests/s. Each request is two
  transactions, so the ledger's sustained write rate is twice the requests/s.
SQLite runs with the service's settings (WAL, synchronous=FULL: every commit is on disk before the answer).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from llmaas.common.db import make_engine, migrate
from llmaas.common.identity import Quota
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.ledger import Ledger, Reservation
from llmaas.metering.pricing import Usage, load_prices
from llmaas.metering.tiers import load_tiers
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.stack.paths import DEPLOY_DIR
from llmaas.stack.services import grpc_healthy

from tests.support.ports import free_base_port

ADMIN_TOKEN = "bench-admin-token"
QUOTA = Quota(60, max_requests=10**9, max_tokens=10**12)


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


def bench_ledger(url: str, requests: int) -> None:
    engine = make_engine(url)
    migrate(engine, Path(ledger_mod.__file__).parent / "migrations")
    ledger = Ledger(engine, load_prices(DEPLOY_DIR / "metering" / "prices.yaml"),
                    load_tiers(DEPLOY_DIR / "metering" / "tiers.yaml"))
    tenant = "bench-" + secrets.token_hex(4)
    ledger.set_tenant_tier(tenant, "monthly", None, dt.datetime.now(dt.UTC))  # no tier refusal during the run
    reserve, settle = [], []
    t_all = time.perf_counter()
    for i in range(requests):
        rid = f"{tenant}-{i}"
        t0 = time.perf_counter()
        ok = ledger.reserve(Reservation(rid, tenant, "key", "model", 200, 64, quotas=(QUOTA,)),
                            dt.datetime.now(dt.UTC)).granted
        t1 = time.perf_counter()
        ledger.settle(rid, Usage(150, 40), "completed", dt.datetime.now(dt.UTC))
        t2 = time.perf_counter()
        assert ok
        reserve.append(t1 - t0)
        settle.append(t2 - t1)
    elapsed = time.perf_counter() - t_all
    pairs = [a + b for a, b in zip(reserve, settle, strict=True)]
    print(f"ledger in process ({engine.dialect.name}), {requests} requests, one at a time")
    print(f"  {'':>16} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("reserve", reserve), ("settle", settle), ("reserve+settle", pairs)):
        print(f"  {name:>16} {_pct(values, 50):8.3f} {_pct(values, 99):8.3f}")
    print(f"  sustained: {requests / elapsed:,.0f} requests/s = {2 * requests / elapsed:,.0f} ledger transactions/s")


async def bench_grpc(address: str, requests: int) -> None:
    async with grpc.aio.insecure_channel(address) as channel:
        stub = metering_pb2_grpc.MeteringServiceStub(channel)
        tenant = "bench-" + secrets.token_hex(4)
        quota = metering_pb2.Quota(window_seconds=QUOTA.window_seconds, max_requests=QUOTA.max_requests,
                                   max_tokens=QUOTA.max_tokens)
        counter = iter(range(10**9))
        await stub.SetTenantTier(metering_pb2.SetTenantTierRequest(tenant_id=tenant, tier="monthly"), timeout=10,
                                 metadata=(("authorization", f"Bearer {ADMIN_TOKEN}"),))

        async def one() -> float:
            rid = f"{tenant}-{next(counter)}"
            t0 = time.perf_counter()
            await stub.Reserve(metering_pb2.ReserveRequest(
                request_id=rid, tenant_id=tenant, key_id="key", model="model", max_input_tokens=200,
                max_output_tokens=64, quotas=[quota], kwh_per_million_tokens=6.32), timeout=10)
            await stub.Settle(metering_pb2.SettleRequest(request_id=rid, prompt_tokens=150, completion_tokens=40,
                                                         outcome="completed"), timeout=10)
            return time.perf_counter() - t0

        async def run(n: int, concurrency: int) -> tuple[list[float], float]:
            latencies: list[float] = []
            todo = iter(range(n))

            async def worker():
                for _ in todo:
                    latencies.append(await one())

            t0 = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return latencies, n / (time.perf_counter() - t0)

        await run(50, 4)  # warm-up
        print(f"metering service over gRPC, {requests} requests per run (reserve + settle = 2 transactions)")
        print(f"  {'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'writes/s':>9}")
        for concurrency in (1, 32):
            lat, rps = await run(requests, concurrency)
            print(f"  {concurrency:>11} {_pct(lat, 50):8.2f} {_pct(lat, 99):8.2f} {rps:8.0f} {2 * rps:9.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database-url", default="", help="Default: a fresh SQLite file.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'metering.db'}"
        bench_ledger(url, args.requests)
        port = free_base_port(span=1)
        env = {**os.environ, "LLMAAS_GRPC_PORT": str(port), "LLMAAS_METERING_DATABASE_URL": url,
               "LLMAAS_ADMIN_TOKEN": ADMIN_TOKEN, "LLMAAS_INTERNAL_SECRET": secrets.token_urlsafe(48),
               "PYTHONUNBUFFERED": "1"}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        proc = subprocess.Popen([sys.executable, "-m", "llmaas.metering"], env=env, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        try:
            deadline = time.monotonic() + 30
            while not grpc_healthy(f"127.0.0.1:{port}"):
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("metering did not start")
                time.sleep(0.2)
            asyncio.run(bench_grpc(f"127.0.0.1:{port}", args.requests))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
