"""A stand-in OTLP/HTTP receiver for tests that start Triton alone (tests only): keeps every body posted to it."""

from __future__ import annotations

import http.server
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class OtlpCollector:
    def __init__(self) -> None:
        self.bodies: list[bytes] = []
        collector = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server API
                collector.bodies.append(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b"{}")

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}"

    def trace_ids(self) -> list[str]:
        """The trace id of every span received (OTLP/HTTP JSON bodies, as Triton sends them)."""
        ids = []
        for body in list(self.bodies):
            for resource in json.loads(body or b"{}").get("resourceSpans", []):
                for scope in resource.get("scopeSpans", []):
                    ids.extend(span["traceId"].lower() for span in scope.get("spans", []))
        return ids


@contextmanager
def otlp_collector() -> Iterator[OtlpCollector]:
    collector = OtlpCollector()
    threading.Thread(target=collector._server.serve_forever, daemon=True).start()
    try:
        yield collector
    finally:
        collector._server.shutdown()
