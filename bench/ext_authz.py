"""The latency ext_authz adds to each request: GET /v1/models through Envoy with the auth check against the same path
through a second Envoy without it, at concurrency 1 and 16, and through a third whose ext_authz asks auth over gRPC
instead of HTTP (the stack's default, llmaas.auth.ext_authz_http). Prints p50/p99, requests/s and auth's CPU per
request of each, and the differences.

    .venv/bin/python -m bench.ext_authz [--requests 200] [--rounds 8]

/v1/models is cheap (the catalog answers from memory), so the difference is the check itself: Envoy's ext_authz
filter, the call to an auth replica, key verification (cached) and the audit record auth appends (write-behind,
durable within a bounded delay: README). It starts its own stack (like the e2e tests, two auth replicas on one SQLite
database) and the other Envoys from the same template, pointed at the same services. Without ext_authz the catalog
still wants the signed identity header, so the bench signs the same identity itself. All sides run in one process,
in alternating rounds, so that the machine's load moves them alike: compare differences and ratios.

Then auth's own part: the Check RPC asked straight of one replica or of both in turn (their audit appends contend
for the one SQLite database), an empty RPC to the same server (what any gRPC hop costs), and the audit append alone
on scratch databases beside the stack's, with the service's SQLite settings (WAL, synchronous=NORMAL) and, for
comparison only, synchronous=FULL (an fsync per commit).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import statistics
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
import httpx
import sqlalchemy as sa
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from llmaas.auth import keys
from llmaas.auth.audit import AuditLog, AuditRecord, AuditStore
from llmaas.auth.tables import audit_events
from llmaas.common.db import make_engine
from llmaas.common.identity import IDENTITY_HEADER, Identity, encode_identity
from llmaas.common.service_auth import EDGE
from llmaas.stack.component import Component
from llmaas.stack.envoy import find_envoy, render_config
from llmaas.stack.ports import StackPorts
from llmaas.stack.tls import EdgeTls
from llmaas.stack.up import ADMIN_FILE

from bench.request_path import _cpu_seconds as _process_cpu_seconds
from tests.support.auth_store import auth_engine
from tests.support.ports import free_base_port
from tests.support.process import running_component
from tests.support.service_auth import service_metadata
from tests.support.stack import live_pids, running_stack

CONCURRENCY = (1, 16)
Send = Callable[[], Awaitable[None]]


@contextmanager
def second_envoy(stack: dict, work: Path, name: str, **options) -> Iterator[str]:
    """Another Envoy, same template and the same upstream services, rendered with `options` (no ext_authz, or
    ext_authz over gRPC). Yields its /v1 base URL."""
    ports = StackPorts(free_base_port(span=2))  # its own listener and admin port; the clusters are the stack's
    config = work / f"{name}.yaml"
    # The stack's own certificate (or plain HTTP like the stack): the difference is ext_authz alone.
    edge = stack["edge_tls"]
    tls = EdgeTls(Path(edge["cert_file"]), Path(edge["key_file"]), None) if edge else None
    secret = json.loads((Path(stack["data_dir"]) / ADMIN_FILE).read_text())["internal_secret"]
    config.write_text(render_config(ports, auth_replicas=len(stack["auth_replicas"]),
                                    upstream=StackPorts(stack["base_port"]), tls=tls, internal_secret=secret,
                                    **options))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports.envoy_admin}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    component = Component(
        name=name, ready=ready,
        argv=[str(find_envoy()), "-c", str(config), "--log-level", "warn", "--concurrency", "2",
              "--base-id", str(ports.base)])
    with running_component(component, work):
        yield f"{'https' if tls else 'http'}://127.0.0.1:{ports.envoy_http}/v1"


async def _measure(send: Send, requests: int, concurrency: int) -> tuple[list[float], float]:
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


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000


def _cpu_seconds(pids: list[int]) -> float:
    return sum(map(_process_cpu_seconds, pids))


async def _interleaved(sides: dict[str, Send], requests: int, rounds: int, concurrency: int,
                       cpu_pids: list[int] = ()) -> dict:
    """Alternating rounds (A B C, C B A, ...): every side sees the same mix of the machine's moments. Per side:
    p50, p99 (ms), requests/s, and the CPU `cpu_pids` spent per request (ms)."""
    latencies = {name: [] for name in sides}
    seconds = dict.fromkeys(sides, 0.0)
    cpu = dict.fromkeys(sides, 0.0)
    names = list(sides)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            before = _cpu_seconds(cpu_pids)
            lat, rps = await _measure(sides[name], requests, concurrency)
            cpu[name] += _cpu_seconds(cpu_pids) - before
            latencies[name] += lat
            seconds[name] += requests / rps
    return {name: (_pct(lat, 50), _pct(lat, 99), len(lat) / seconds[name], cpu[name] / len(lat) * 1000)
            for name, lat in latencies.items()}


def _print_header(title: str) -> None:
    print(f"\n{title}")
    print(f"{'concurrency':>11}  {'':<22} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'auth CPU ms/req':>16}")


def _print_row(concurrency: int, name: str, p50: float, p99: float, rps: float | None = None,
               cpu: float | None = None) -> None:
    print(f"{concurrency:>11}  {name:<22} {p50:8.2f} {p99:8.2f} {'' if rps is None else f'{rps:8.0f}':>8}"
          f" {'' if cpu is None else f'{cpu:16.3f}':>16}")


def _audit_count(data_dir: Path) -> int:
    engine = sa.create_engine(f"sqlite:///{data_dir / 'auth.db'}")
    try:
        with engine.connect() as conn:
            return conn.execute(sa.select(sa.func.count()).select_from(audit_events)).scalar_one()
    finally:
        engine.dispose()


async def end_to_end(stack: dict, plain_url: str, grpc_url: str, requests: int, rounds: int) -> None:
    data_dir = Path(stack["data_dir"])
    secret = json.loads((data_dir / ADMIN_FILE).read_text())["internal_secret"]
    key_id, _ = keys.parse(stack["api_key"])
    # What ext_authz would inject for this key (made by `llmaas up`: every model, no quota).
    identity = encode_identity(Identity(tenant_id=stack["tenant_id"], key_id=key_id), secret)
    limits = httpx.Limits(max_connections=32, max_keepalive_connections=32)
    async with (
        httpx.AsyncClient(base_url=stack["base_url"], limits=limits, timeout=30,
                          headers={"Authorization": f"Bearer {stack['api_key']}"}) as with_authz,
        httpx.AsyncClient(base_url=plain_url, limits=limits, timeout=30,
                          headers={IDENTITY_HEADER: identity}) as without_authz,
        httpx.AsyncClient(base_url=grpc_url, limits=limits, timeout=30,
                          headers={"Authorization": f"Bearer {stack['api_key']}"}) as with_grpc_authz,
    ):
        async def via_authz():
            (await with_authz.get("/models")).raise_for_status()

        async def via_grpc_authz():
            (await with_grpc_authz.get("/models")).raise_for_status()

        async def via_plain():
            (await without_authz.get("/models")).raise_for_status()

        a, b = (await with_authz.get("/models")).json(), (await without_authz.get("/models")).json()
        assert "data" in a and "data" in b, f"a path failed: {a} {b}"
        assert [m["id"] for m in a["data"]] == [m["id"] for m in b["data"]], "the two paths answer differently"
        sides = {"with ext_authz": via_authz, "ext_authz over gRPC": via_grpc_authz, "without ext_authz": via_plain}
        for send in sides.values():  # warm-up: connections, caches
            await _measure(send, 50, 4)

        before = _audit_count(data_dir)
        print(f"GET /v1/models ({len(a['data'])} models), {rounds} rounds x {requests} requests per side and "
              f"concurrency, sides alternating; the stack runs {len(stack['auth_replicas'])} auth replicas")
        _print_header("Through Envoy (with ext_authz: over HTTP, the stack's; over gRPC: a second Envoy)")
        auth_pids = [pid for name, pid in live_pids(stack).items() if name.split("-")[0] == "auth"]
        for concurrency in CONCURRENCY:
            r = await _interleaved(sides, requests, rounds, concurrency, auth_pids)
            (a50, a99, arps, acpu), (g50, g99, grps, gcpu) = r["with ext_authz"], r["ext_authz over gRPC"]
            p50, p99, prps, pcpu = r["without ext_authz"]
            _print_row(concurrency, "with ext_authz", a50, a99, arps, acpu)
            _print_row(concurrency, "ext_authz over gRPC", g50, g99, grps, gcpu)
            _print_row(concurrency, "without ext_authz", p50, p99, prps, pcpu)
            print(f"{concurrency:>11}  {'added by ext_authz':<22} {a50 - p50:+8.2f} {a99 - p99:+8.2f} "
                  f"{arps / prps:8.2f}   (x{a50 / p50:.2f} p50, x{a99 / p99:.2f} p99; req/s ratio)")
            print(f"{concurrency:>11}  {'added over gRPC':<22} {g50 - p50:+8.2f} {g99 - p99:+8.2f} "
                  f"{grps / prps:8.2f}   auth CPU per request: HTTP {acpu:.3f} ms, gRPC {gcpu:.3f} ms "
                  f"(x{acpu / gcpu:.2f})")
        measured = rounds * requests * len(CONCURRENCY) * 2  # over HTTP and over gRPC
        print(f"audit records appended during the run: {_audit_count(data_dir) - before} for {measured} "
              "authorised requests")


async def check_direct(stack: dict, requests: int, rounds: int) -> None:
    """envoy.service.auth.v3.Authorization/Check as Envoy sends it, straight to the auth replicas: all to the first,
    or in turn to each (as Envoy balances them; they share one SQLite database, so their appends contend)."""
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "GET", "/v1/models"
    http.headers["authorization"] = f"Bearer {stack['api_key']}"
    request.attributes.source.address.socket_address.address = "127.0.0.1"
    channels = [grpc.aio.insecure_channel(address) for address in stack["auth_replicas"]]
    stubs = [external_auth_pb2_grpc.AuthorizationStub(channel) for channel in channels]
    turn = itertools.cycle(stubs)
    edge = service_metadata(stack, "auth", caller=EDGE)  # Envoy's credential

    async def ask(stub) -> None:
        response = await stub.Check(request, timeout=10, metadata=edge)
        assert response.status.code == code_pb2.OK, response

    health = health_pb2_grpc.HealthStub(channels[0])

    async def floor() -> None:  # the same server, an RPC that does nothing: what any gRPC hop to auth costs
        await health.Check(health_pb2.HealthCheckRequest(), timeout=10)

    sides = {"Check, 1 replica": lambda: ask(stubs[0]), f"Check, {len(stubs)} replicas": lambda: ask(next(turn)),
             "health (gRPC floor)": floor}
    for send in sides.values():
        await _measure(send, 50, 4)
    _print_header("Auth alone: the Check RPC straight to the replicas (key verification + audit append), and an "
                  "empty RPC")
    for concurrency in CONCURRENCY:
        results = await _interleaved(sides, requests, rounds, concurrency)
        for name, (p50, p99, rps, _) in results.items():
            _print_row(concurrency, name, p50, p99, rps)
    for channel in channels:
        await channel.close()


def _record(i: int) -> AuditRecord:
    return AuditRecord(tenant_id="ten_bench", key_id="0123456789abcdef", actor="0123456789abcdef",
                       action="request.authorized", endpoint="GET /v1/models", status=200,
                       client_address="127.0.0.1", request_id=f"bench-{i}")


def _audit_log(url: str, synchronous: str) -> tuple[AuditLog, sa.Engine]:
    auth_engine(url).dispose()  # migrated
    engine = make_engine(url)  # the service's settings: WAL, synchronous=NORMAL
    if synchronous != "NORMAL":
        @sa.event.listens_for(engine, "connect")
        def _relaxed(dbapi_conn, _record):
            dbapi_conn.execute(f"PRAGMA synchronous={synchronous}")
    return AuditLog(AuditStore(engine)), engine


async def audit_append(work: Path, requests: int, rounds: int) -> None:
    """AuditLog.append (group commit, one writer) on scratch databases in the same file system as the stack's: with
    the service's settings, and with synchronous=FULL for comparison."""
    logs = {"synchronous=NORMAL": _audit_log(f"sqlite:///{work / 'audit-normal.db'}", "NORMAL"),
            "FULL (what if)": _audit_log(f"sqlite:///{work / 'audit-full.db'}", "FULL")}
    counter = itertools.count()

    def appender(log: AuditLog) -> Send:
        async def send():
            await log.append(_record(next(counter)))
        return send

    sides = {name: appender(log) for name, (log, _) in logs.items()}
    for send in sides.values():
        await _measure(send, 50, 4)
    _print_header("Auth's audit append alone (AuditLog.append, group commit, one writer, scratch SQLite databases)")
    for concurrency in CONCURRENCY:
        for name, (p50, p99, rps, _) in (await _interleaved(sides, requests, rounds, concurrency)).items():
            _print_row(concurrency, name, p50, p99, rps)
    for log, engine in logs.values():
        await log.close()
        engine.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=200, help="requests per side, round and concurrency")
    parser.add_argument("--rounds", type=int, default=8, help="alternating rounds per concurrency")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data") as stack:
        print("load average at start: {:.2f} {:.2f} {:.2f} ({} cores)".format(*os.getloadavg(), os.cpu_count()))
        work = Path(tmp) / "bench"
        work.mkdir()
        with (second_envoy(stack, work, "envoy-no-ext-authz", ext_authz=False) as plain_url,
              second_envoy(stack, work, "envoy-grpc-ext-authz", authz_transport="grpc") as grpc_url):
            asyncio.run(end_to_end(stack, plain_url, grpc_url, args.requests, args.rounds))
        asyncio.run(check_direct(stack, args.requests, max(2, args.rounds // 2)))
        asyncio.run(audit_append(work, args.requests, max(2, args.rounds // 2)))
        print("\nload average at end: {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()))


if __name__ == "__main__":
    main()
