"""The cost of metering on the request path: one Reserve per request, settlements batched, and the ledger's rates.

    .venv/bin/python -m bench.metering [--requests 2000] [--database-url sqlite:///...|postgresql://...]

Each request has a key quota and the default tier (so every request touches 5 limit windows):
- `ledger`: the Ledger in this process. One request after another (a round of one reservation, then a round of one
  settlement: what a lone request costs), then rounds of 32 (what group commit and SettleBatch do under load).
- `grpc`: the real metering service (`python -m llmaas.metering`, its own process) called over gRPC at concurrency 1
  and 32, two ways: `settle` = a Reserve and a Settle per request, awaited one after the other (the router before
  SettleBatch); `batched` = a Reserve per request and the settlements through the router's own BatchedHandOff
  (llmaas.router.handoff) as SettleBatch calls, as the router sends them now. Latency is what a request waits for
  (reserve + settle; reserve only when batched: nobody waits for a settlement). CPU is the metering process's, from
  /proc, per request, settlements included (the batcher is drained before the run ends). The ledger must then hold
  every request, settled once.
SQLite runs with the service's settings (WAL, synchronous=NORMAL: a commit survives the death of the process).
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
from llmaas.common.identity import IDENTITY_HEADER, Identity, Quota, encode_identity
from llmaas.common.service_auth import ROUTER, ServiceCredentials
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.ledger import Ledger, Reservation, SettleItem
from llmaas.metering.pricing import Usage, load_prices
from llmaas.metering.tiers import load_tiers
from llmaas.metering.v1 import metering_pb2, metering_pb2_grpc
from llmaas.router.handoff import BatchedHandOff
from llmaas.stack.paths import DEPLOY_DIR
from llmaas.stack.services import grpc_healthy

from tests.support.ports import free_base_port

ADMIN_TOKEN = "bench-admin-token"
TICK = os.sysconf("SC_CLK_TCK")
QUOTA = Quota(60, max_requests=10**9, max_tokens=10**12)
SETTLE_DELAY = 0.015  # the router's (llmaas.router.pipeline)


def _cpu_seconds(pid: int) -> float:
    """The process's CPU time so far (user + system), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def _pct(values: list[float], p: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(p) - 1] * 1000


def bench_ledger(url: str, requests: int) -> None:
    engine = make_engine(url)
    migrate(engine, Path(ledger_mod.__file__).parent / "migrations")
    ledger = Ledger(engine, load_prices(DEPLOY_DIR / "metering" / "prices.yaml"),
                    load_tiers(DEPLOY_DIR / "metering" / "tiers.yaml"))
    tenant = "bench-" + secrets.token_hex(4)
    ledger.set_tenant_tier(tenant, "monthly", None, dt.datetime.now(dt.UTC))  # no tier refusal during the run

    def reservation(rid: str) -> Reservation:
        return Reservation(rid, tenant, "key", "model", 200, 64, quotas=(QUOTA,))

    reserve, settle = [], []
    cpu0, t_all = time.process_time(), time.perf_counter()
    for i in range(requests):
        rid = f"{tenant}-{i}"
        t0 = time.perf_counter()
        ok = ledger.reserve(reservation(rid), dt.datetime.now(dt.UTC)).granted
        t1 = time.perf_counter()
        ledger.settle(rid, Usage(150, 40), "completed", dt.datetime.now(dt.UTC))
        t2 = time.perf_counter()
        assert ok
        reserve.append(t1 - t0)
        settle.append(t2 - t1)
    elapsed, cpu = time.perf_counter() - t_all, time.process_time() - cpu0
    pairs = [a + b for a, b in zip(reserve, settle, strict=True)]
    print(f"ledger in process ({engine.dialect.name}), {requests} requests, one at a time")
    print(f"  {'':>16} {'p50 ms':>8} {'p99 ms':>8}")
    for name, values in (("reserve", reserve), ("settle", settle), ("reserve+settle", pairs)):
        print(f"  {name:>16} {_pct(values, 50):8.3f} {_pct(values, 99):8.3f}")
    print(f"  sustained: {requests / elapsed:,.0f} requests/s = {2 * requests / elapsed:,.0f} ledger transactions/s,"
          f" CPU {cpu / requests * 1000:.3f} ms per request")

    size, cpu_reserve, cpu_settle = 32, 0.0, 0.0
    for start in range(0, requests, size):
        ids = [f"{tenant}-r{i}" for i in range(start, min(start + size, requests))]
        now = dt.datetime.now(dt.UTC)
        c0 = time.process_time()
        decisions = ledger.reserve_many([(reservation(rid), now) for rid in ids])
        c1 = time.process_time()
        settled = ledger.settle_many([SettleItem(rid, Usage(150, 40), "completed") for rid in ids], now)
        c2 = time.process_time()
        assert all(d.granted for d in decisions) and all(s.recorded for s in settled)
        cpu_reserve, cpu_settle = cpu_reserve + c1 - c0, cpu_settle + c2 - c1
    print(f"  rounds of {size}: CPU per request {cpu_reserve / requests * 1000:.3f} ms reserve +"
          f" {cpu_settle / requests * 1000:.3f} ms settle")


async def bench_grpc(address: str, requests: int, pid: int, secret: str) -> None:
    """Calls carry what the router's do: its service credential, and each request's signed identity."""
    credentials = ServiceCredentials(ROUTER, secret)
    async with grpc.aio.insecure_channel(address) as channel:
        admin_stub = metering_pb2_grpc.MeteringServiceStub(channel)
        stub = metering_pb2_grpc.MeteringInternalServiceStub(channel)
        tenant = "bench-" + secrets.token_hex(4)
        quota = metering_pb2.Quota(window_seconds=QUOTA.window_seconds, max_requests=QUOTA.max_requests,
                                   max_tokens=QUOTA.max_tokens)
        counter = iter(range(10**9))
        admin = (("authorization", f"Bearer {ADMIN_TOKEN}"),)
        await admin_stub.SetTenantTier(metering_pb2.SetTenantTierRequest(tenant_id=tenant, tier="monthly"), timeout=10,
                                 metadata=admin)

        async def settle_batch(batch: list[metering_pb2.SettleRequest]) -> None:
            response = await stub.SettleBatch(metering_pb2.SettleBatchRequest(items=batch), timeout=20,
                                              metadata=credentials.metadata("metering"))
            assert not any(r.error_code for r in response.results), response

        batcher = BatchedHandOff("settlement", settle_batch, lambda s: s.request_id, max_delay=SETTLE_DELAY)

        async def one(batched: bool) -> float:
            rid = f"{tenant}-{next(counter)}"
            t0 = time.perf_counter()
            signed = encode_identity(Identity(tenant, "key", quotas=(QUOTA,)), secret, request_id=rid)
            md = (*credentials.metadata("metering"), (IDENTITY_HEADER, signed))
            await stub.Reserve(metering_pb2.ReserveRequest(
                request_id=rid, tenant_id=tenant, key_id="key", model="model", max_input_tokens=200,
                max_output_tokens=64, quotas=[quota], kwh_per_million_tokens=6.32), timeout=10, metadata=md)
            settlement = metering_pb2.SettleRequest(request_id=rid, prompt_tokens=150, completion_tokens=40,
                                                    outcome="completed", identity=signed)
            if batched:
                batcher.submit(settlement)
            else:
                await stub.Settle(settlement, timeout=10, metadata=md)
            return time.perf_counter() - t0

        async def run(n: int, concurrency: int, batched: bool) -> tuple[list[float], float, float]:
            latencies: list[float] = []
            todo = iter(range(n))

            async def worker():
                for _ in todo:
                    latencies.append(await one(batched))

            cpu0, t0 = _cpu_seconds(pid), time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            await batcher.drain()
            elapsed, cpu = time.perf_counter() - t0, _cpu_seconds(pid) - cpu0
            return latencies, n / elapsed, cpu / n

        await run(50, 4, False)  # warm-up
        await run(50, 4, True)
        print(f"metering service over gRPC, {requests} requests per run")
        print(f"  {'settlement':>10} {'concurrency':>11} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'CPU ms/req':>10}")
        done = 100
        for batched in (False, True):
            for concurrency in (1, 32):
                lat, rps, cpu = await run(requests, concurrency, batched)
                done += requests
                print(f"  {'batched' if batched else 'settle':>10} {concurrency:>11} {_pct(lat, 50):8.2f}"
                      f" {_pct(lat, 99):8.2f} {rps:8.0f} {cpu * 1000:10.2f}")
        total = (await admin_stub.GetUsage(metering_pb2.GetUsageRequest(tenant_id=tenant), timeout=30,
                                     metadata=admin)).total
        assert total.requests == done and total.prompt_tokens == 150 * done, (total, done)
        print(f"  ledger: {total.requests} requests settled once each, as sent")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--database-url", default="", help="Default: a fresh SQLite file.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{Path(tmp) / 'metering.db'}"
        bench_ledger(url, args.requests)
        port = free_base_port(span=1)
        secret = secrets.token_urlsafe(48)
        env = {**os.environ, "LLMAAS_GRPC_PORT": str(port), "LLMAAS_METERING_DATABASE_URL": url,
               "LLMAAS_ADMIN_TOKEN": ADMIN_TOKEN, "LLMAAS_INTERNAL_SECRET": secret,
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
            asyncio.run(bench_grpc(f"127.0.0.1:{port}", args.requests, proc.pid, secret))
        finally:
            proc.terminate()
            proc.wait(timeout=10)


if __name__ == "__main__":
    main()
