"""A lean HTTP/1.1 load generator for the benches: keep-alive connections on asyncio streams, request bytes encoded
once, responses read by Content-Length or chunked framing, over TLS when given a context (the stack's edge). On a 2-core machine the client shares the CPU with what
it measures: a general-purpose client (httpx, aiohttp) spends more per request than the path under test, so the
benches use this one (what wrk is to C), and report its CPU apart."""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from dataclasses import dataclass, field


@dataclass
class Result:
    """One run: latencies (s), time to first byte of the body (s, streamed), requests/s, errors."""
    latencies: list[float] = field(default_factory=list)
    first_bytes: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    errors: int = 0
    last_error: str = ""

    @property
    def rps(self) -> float:
        return len(self.latencies) / self.elapsed if self.elapsed else 0.0


def post(host: str, port: int, path: str, body: dict, headers: dict[str, str] | None = None) -> bytes:
    payload = json.dumps(body, separators=(",", ":")).encode()
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}:{port}", "Content-Type: application/json",
             f"Content-Length: {len(payload)}", *(f"{k}: {v}" for k, v in (headers or {}).items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + payload


def client_tls(ca_file: str | None) -> ssl.SSLContext:
    """Verifies the server against ca_file (None: the system's CAs) and offers HTTP/1.1 only: this client speaks
    nothing else, and a server picking h2 by ALPN would not be understood."""
    context = ssl.create_default_context(cafile=ca_file)
    context.set_alpn_protocols(["http/1.1"])
    return context


class Connection:
    def __init__(self, host: str, port: int, tls: ssl.SSLContext | None = None) -> None:
        self.host, self.port, self.tls = host, port, tls
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes, on_first_body=None) -> tuple[int, bytes]:
        """Sends one request, returns (status, body). on_first_body() is called when the first body bytes arrive."""
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 22, ssl=self.tls)
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        lower = head.lower()
        close = b"connection: close" in lower
        if b"transfer-encoding: chunked" in lower:
            parts = []
            while True:
                size = int((await self.reader.readuntil(b"\r\n"))[:-2].split(b";")[0], 16)
                if size == 0:
                    await self.reader.readuntil(b"\r\n")
                    break
                parts.append(await self.reader.readexactly(size + 2))
                if on_first_body is not None and len(parts) == 1:
                    on_first_body()
            body = b"".join(p[:-2] for p in parts)
        else:
            start = lower.find(b"content-length:")
            length = int(lower[start + 15:lower.find(b"\r\n", start)]) if start >= 0 else 0
            body = await self.reader.readexactly(length)
            if on_first_body is not None:
                on_first_body()
        if close:
            self.close()
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = self.reader = None


async def run(host: str, port: int, make_request, *, concurrency: int, seconds: float | None = None,
              requests: int | None = None, check=None, tls: ssl.SSLContext | None = None) -> Result:
    """Closed loop: `concurrency` connections, each sending make_request() (bytes) as soon as its last one ended,
    for `seconds` or until `requests` were sent. check(status, body) -> error text or None. tls: see client_tls."""
    result = Result()
    connections = [Connection(host, port, tls) for _ in range(concurrency)]
    sent = 0
    start = time.perf_counter()
    deadline = start + seconds if seconds else None

    async def worker(conn: Connection) -> None:
        nonlocal sent
        while (deadline is None or time.perf_counter() < deadline) and (requests is None or sent < requests):
            sent += 1
            raw = make_request()
            t0 = time.perf_counter()
            first: list[float] = []
            try:
                status, body = await conn.request(raw, lambda first=first: first.append(time.perf_counter()))
            except (OSError, asyncio.IncompleteReadError, ValueError) as e:  # ssl.SSLError is an OSError
                conn.close()
                result.errors += 1
                result.last_error = repr(e)
                continue
            error = check(status, body) if check else (None if status == 200 else f"HTTP {status}: {body[:200]!r}")
            if error:
                result.errors += 1
                result.last_error = error
                continue
            result.latencies.append(time.perf_counter() - t0)
            if first:
                result.first_bytes.append(first[0] - t0)

    try:
        await asyncio.gather(*(worker(c) for c in connections))
    finally:
        result.elapsed = time.perf_counter() - start
        for c in connections:
            c.close()
    return result
