"""One trace per request, across Envoy, auth, router, guard, catalog (when the router's resolution cache misses),
metering and Triton, read back from Jaeger."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from llmaas.stack.trace_query import JaegerQuery, edges

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

EXPECTED_EDGES = {("envoy", "auth"), ("envoy", "router"), ("router", "guard"), ("router", "metering"),
                  ("router", "triton")}
# The router resolves the model through its cache (llmaas.router.model_cache): it asks the catalog only on a miss
# (or while the cache is off), and its span says which (`llmaas.model_cache`: hit, miss or off). A hit must show no
# router -> catalog edge, anything else must show one.
CATALOG_EDGE = ("router", "catalog")


# Triton 2.51's OpenTelemetry exporter now and then drops one request's spans (seen in about one CI run in five, with
# the stream closed cleanly). The other hops never did. A new traced request is tried when Triton's part is missing;
# every attempt must still show all of our own edges.
ATTEMPTS = 3


def _traced_request(stack) -> str:
    trace_id = secrets.token_hex(16)
    resp = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}",
                               "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "trace me"}],
                            "max_tokens": 3})
    assert resp.status_code == 200
    return trace_id


def _edges_when_complete(jaeger: JaegerQuery, trace_id: str, expected: set, timeout: float) -> set[tuple[str, str]]:
    # Every process exports on its own schedule (Envoy and Triton in batches): poll until the edges are there.
    deadline = time.monotonic() + timeout
    while not expected <= (found := edges(jaeger.spans(trace_id))) and time.monotonic() < deadline:
        time.sleep(0.5)
    return found


def _model_cache(jaeger: JaegerQuery, trace_id: str, timeout: float) -> str:
    """The router span's `llmaas.model_cache` tag (hit, miss or off), once the router's spans are in Jaeger."""
    deadline = time.monotonic() + timeout
    while True:
        for span in (jaeger.trace(trace_id) or {}).get("spans") or []:
            for tag in span.get("tags") or []:
                if tag.get("key") == "llmaas.model_cache":
                    return tag["value"]
        assert time.monotonic() < deadline, "the router span has no llmaas.model_cache tag"
        time.sleep(0.5)


def test_trace_edges_in_jaeger(stack):
    if not stack["jaeger_query"]:
        pytest.skip("Jaeger is not installed (deploy/install-jaeger.sh)")
    jaeger = JaegerQuery(stack["jaeger_query"])
    for _ in range(ATTEMPTS):
        trace_id = _traced_request(stack)
        cache = _model_cache(jaeger, trace_id, timeout=20)
        assert cache in ("hit", "miss", "off")
        expected = EXPECTED_EDGES | ({CATALOG_EDGE} if cache != "hit" else set())
        found = _edges_when_complete(jaeger, trace_id, expected, timeout=20)
        assert expected - {("router", "triton")} <= found, f"missing edges: {expected - found}"
        if cache == "hit":
            assert CATALOG_EDGE not in found, "a cache hit still asked the catalog"
        if ("router", "triton") in found:
            break
    assert expected <= found, f"missing edges: {expected - found}"
    # Nothing in a span may carry the prompt.
    assert "trace me" not in repr(jaeger.trace(trace_id))
