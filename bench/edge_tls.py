"""What TLS 1.3 at the edge costs: the same chat request through the stack's HTTPS listener and through a plain-HTTP
twin of its Envoy (same template, ext_authz included, same upstream services), interleaved, at c=1; on kept-alive
connections (the usual client) and with a new connection per request (a TLS handshake each).

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
from bench.request_path import HOST, Paths, unlimited_tier
from tests.support.ports import free_base_port
from tests.support.process import running_component
from tests.support.stack import running_stack


@contextmanager
def plain_http_twin(stack: dict, work: Path) -> Iterator[int]:
    """A second Envoy like the stack's, on plain HTTP, in front of the same services. Yields its port."""
    ports = StackPorts(free_base_port(span=2))
    config = work / "envoy.yaml"
    config.write_text(render_config(ports, auth_replicas=len(stack["auth_replicas"]),
                                    upstream=StackPorts(stack["base_port"]), trace_sampling=stack["trace_sampling"]))

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"http://{HOST}:{ports.envoy_admin}/ready", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    component = Component(name="envoy-plain-http", ready=ready,
                          argv=[str(find_envoy()), "-c", str(config), "--log-level", "warn", "--concurrency", "2",
                                "--base-id", str(ports.base)])
    with running_component(component, work):
        yield ports.envoy_http


async def measure(stack: dict, plain_port: int, seconds: float, repeat: int) -> None:
    paths = Paths(stack, max_tokens=16)
    unlimited_tier(stack)
    tls_port, make, tls = paths.stack()

    def closing() -> bytes:  # Envoy answers with connection: close, the client reconnects: a handshake a request
        head, body = make().split(b"\r\n\r\n", 1)
        return head + b"\r\nConnection: close\r\n\r\n" + body

    cells = {("https", "kept-alive"): (tls_port, make, tls), ("http", "kept-alive"): (plain_port, make, None),
             ("https", "new connection"): (tls_port, closing, tls), ("http", "new connection"): (plain_port, closing,
                                                                                             None)}
    for port, send, context in cells.values():  # warm-up
        await loadgen.run(HOST, port, send, concurrency=2, seconds=1, tls=context)
    p50: dict[tuple[str, str], list[float]] = {cell: [] for cell in cells}
    for _ in range(repeat):
        for cell, (port, send, context) in cells.items():
            r = await loadgen.run(HOST, port, send, concurrency=1, seconds=seconds, tls=context)
            if r.errors:
                print(f"  !! {cell}: {r.errors} errors, last: {r.last_error}")
            p50[cell].append(statistics.median(r.latencies) * 1000)
    print(f"c=1 chat request (16 tokens), p50 ms, median of {repeat} x {seconds:g} s")
    for connection in ("kept-alive", "new connection"):
        https, http = (statistics.median(p50[(scheme, connection)]) for scheme in ("https", "http"))
        print(f"  {connection:15} https {https:6.2f}   http {http:6.2f}   TLS adds {https - http:+.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, running_stack(Path(tmp) / "data", "--no-jaeger") as stack, \
            plain_http_twin(stack, Path(tmp)) as plain_port:
        asyncio.run(measure(stack, plain_port, args.seconds, args.repeat))


if __name__ == "__main__":
    main()
