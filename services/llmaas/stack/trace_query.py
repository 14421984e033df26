"""Minimal client for Jaeger's HTTP query API (the one the UI uses), for tests and `llmaas` diagnostics.

Standard library only, so the runtime package does not depend on an HTTP client.
"""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Span:
    # Ids are lowercase hex, zero-padded to 32 / 16 chars (Jaeger drops the high half of a trace id when it is 0).
    trace_id: str
    span_id: str
    parent_span_id: str | None
    service: str
    operation: str


class JaegerQuery:
    def __init__(self, base_url: str, timeout: float = 5.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout

    def _get(self, path: str, params: dict[str, Any] | None = None) -> dict[str, Any] | None:
        """Decoded JSON body, or None on 404 (Jaeger's answer for an unknown trace id)."""
        url = self.base_url + path
        if params:
            url += "?" + urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
        try:
            with urllib.request.urlopen(url, timeout=self.timeout) as resp:
                return json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def services(self) -> list[str]:
        body = self._get("/api/services") or {}
        return sorted(body.get("data") or [])

    def find_traces(
        self, service: str, operation: str | None = None, limit: int = 20, lookback: str = "1h"
    ) -> list[str]:
        """Trace ids of the most recent traces that have a span of `service`."""
        params = {"service": service, "operation": operation, "limit": limit, "lookback": lookback}
        body = self._get("/api/traces", params) or {}
        return [_trace_id(t["traceID"]) for t in body.get("data") or []]

    def trace(self, trace_id: str) -> dict[str, Any] | None:
        """The raw Jaeger JSON trace (spans + processes), or None when Jaeger does not know it (yet)."""
        body = self._get(f"/api/traces/{trace_id}")
        data = (body or {}).get("data") or []
        return data[0] if data else None

    def spans(self, trace_id: str) -> list[Span]:
        """Every stored span of the trace with its service and CHILD_OF parent; [] when the trace is unknown."""
        raw = self.trace(trace_id)
        if raw is None:
            return []
        processes = raw.get("processes") or {}
        result = []
        for s in raw.get("spans") or []:
            parent = next(
                (r["spanID"] for r in s.get("references") or [] if r.get("refType") == "CHILD_OF"), None
            )
            result.append(
                Span(
                    trace_id=_trace_id(s["traceID"]),
                    span_id=_span_id(s["spanID"]),
                    parent_span_id=_span_id(parent) if parent else None,
                    service=(processes.get(s.get("processID")) or {}).get("serviceName", ""),
                    operation=s.get("operationName", ""),
                )
            )
        return result

    def wait_for_services(
        self, trace_id: str, services: Iterable[str], timeout: float = 15.0, interval: float = 0.2
    ) -> list[Span]:
        """Polls until the trace has at least one span of each of `services`; TimeoutError says what was seen."""
        wanted = set(services)
        deadline = time.monotonic() + timeout
        spans: list[Span] = []
        while True:
            try:
                spans = self.spans(trace_id)
            except (OSError, ValueError):  # Jaeger restarting / connection refused: keep polling
                spans = []
            if wanted <= {s.service for s in spans}:
                return spans
            if time.monotonic() >= deadline:
                seen = sorted({s.service for s in spans})
                raise TimeoutError(
                    f"trace {trace_id}: wanted services {sorted(wanted)}, saw {seen} after {timeout:.1f}s"
                )
            time.sleep(interval)


def edges(spans: Iterable[Span]) -> set[tuple[str, str]]:
    """(parent service, child service) pairs of the CHILD_OF links within the given spans."""
    spans = list(spans)
    by_id = {s.span_id: s for s in spans}
    return {
        (by_id[s.parent_span_id].service, s.service)
        for s in spans
        if s.parent_span_id and s.parent_span_id in by_id
    }


def _trace_id(hex_id: str) -> str:
    return hex_id.lower().zfill(32)


def _span_id(hex_id: str) -> str:
    return hex_id.lower().zfill(16)
