"""What TLS 1.3 at the edge costs: the same chat request through the stack's HTTPS listener and through a plain-HTTP
twin of its Envoy (same template, ext_authz included, same upstream services), interleaved, at c=1; on kept-alive
connections (the usual client) and with a new connection per request (a TLS handshake each). Latency p50 and each
Envoy's CPU per request (from /proc; the two Envoys are separate processes).

    python -m bench.edge_tls [--seconds 5] [--repeat 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmaas.stack.component import Component
from llmaas.stack.envoy import find_envoy, render_config
from llmaas.stack.ports import StackPorts

from bench import loadgen
from bench.request_path import HOST, Paths, _cpu_seconds, unlimited_tier
from tests.support.ports import free_base_port
from tests.support.process import running_component
from tests.support.service_auth import internal_secret
from tests.support.stack import running_stack


@contextmanager
def plain_http_twin(stack: dict, work: Path) -> Iterator[tuple[int, int]]:
    """A second Envoy like the stack's, on plain HTTP, in front of the same services. Yields its port and pid."""
    ports = StackPorts(free_base_port(span=2))
    config = work / "envoy.yaml"
    config.write_text(render_config(ports, auth_replicas=len(stack["auth_replicas"]),
                                    upstream=StackPorts(stack["base_port"]), trace_sampling=stack["trace_sampling"],
                                    internal_secret=internal_secret(stack)))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{ports.envoy_admin}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    component = Component(name="envoy-plain-http", ready=ready,
                          argv=[str(find_envoy()), "-c", str(config), "--log-level", "warn", "--concurrency", "2",
                                "--base-id", str(ports.base)])
    with running_component(component, work) as process:
        yield ports.envoy_http, process.pid


async def measure(stack: dict, plain: tuple[int, int], seconds: float, repeat: int) -> None:
    (plain_port, plain_pid), tls_pid = plain, stack["pids"]["envoy"]
    paths = Paths(stack, max_tokens=16)
    unlimited_tier(stack)
    tls_port, make, tls = paths.stack()

    def closing() -> bytes:  # Envoy answers with connection: close, the client reconnects: a handshake a request
        head, body = make().split(b"\r\n\r\n", 1)
        return head + b"\r\nConnection: close\r\n\r\n" + body

    cells = {("https", "kept-alive"): (tls_port, make, tls, tls_pid),
             ("http", "kept-alive"): (plain_port, make, None, plain_pid),
             ("https", "new connection"): (tls_port, closing, tls, tls_pid),
             ("http", "new connection"): (plain_port, closing, None, plain_pid)}
    for port, send, context, _ in cells.values():  # warm-up
        await loadgen.run(HOST, port, send, concurrency=2, seconds=1, tls=context)
    p50: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    cpu: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    for _ in range(repeat):
        for cell, (port, send, context, pid) in cells.items():
            before = _cpu_seconds(pid)
            r = await loadgen.run(HOST, port, send, concurrency=1, seconds=seconds, tls=context)
            cpu[cell].append((_cpu_seconds(pid) - before) / max(1, len(r.latencies)) * 1000)
            if r.errors:
                print(f"  !! {cell}: {r.errors} errors, last: {r.last_error}")
            p50[cell].append(statistics.median(r.latencies) * 1000)
    print(f"c=1 chat request (16 tokens), median of {repeat} x {seconds:g} s: p50 ms, Envoy CPU ms per request")
    for connection in ("kept-alive", "new connection"):
        https, http = (statistics.median(p50[(scheme, connection)]) for scheme in ("https", "http"))
        cpu_s, cpu_h = (statistics.median(cpu[(scheme, connection)]) for scheme in ("https", "http"))
        print(f"  {connection:15} p50 https {https:6.2f}  http {http:6.2f}  TLS adds {https - http:+.2f}   "
              f"Envoy CPU https {cpu_s:.3f}  http {cpu_h:.3f}  TLS adds {cpu_s - cpu_h:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data", "--no-jaeger") as stack, \
            plain_http_twin(stack, Path(tmp)) as plain:
        asyncio.run(measure(stack, plain, args.seconds, args.repeat))


if __name__ == "__main__":
    main()
