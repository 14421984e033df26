"""One trace per request, across Envoy, auth, router, guard, catalog, metering and Triton, read back from Jaeger."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from llmaas.stack.trace_query import JaegerQuery, edges

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

EXPECTED_EDGES = {("envoy", "auth"), ("envoy", "router"), ("router", "guard"), ("router", "catalog"),
                  ("router", "metering"), ("router", "triton")}


def test_trace_edges_in_jaeger(stack):
    if not stack["jaeger_query"]:
        pytest.skip("Jaeger is not installed (deploy/install-jaeger.sh)")
    trace_id = secrets.token_hex(16)
    resp = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}",
                               "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"},
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "trace me"}],
                            "max_tokens": 3})
    assert resp.status_code == 200
    # Every process exports on its own schedule (Envoy and Triton in batches): poll until the edges are there.
    jaeger = JaegerQuery(stack["jaeger_query"])
    jaeger.wait_for_services(trace_id, {"envoy", "auth", "router", "guard", "catalog", "metering", "triton"},
                             timeout=30)
    deadline = time.monotonic() + 15
    while not EXPECTED_EDGES <= (found := edges(jaeger.spans(trace_id))) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert EXPECTED_EDGES <= found, f"missing edges: {EXPECTED_EDGES - found}"
    # Nothing in a span may carry the prompt.
    assert "trace me" not in repr(JaegerQuery(stack["jaeger_query"]).trace(trace_id))
