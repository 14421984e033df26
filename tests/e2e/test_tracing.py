"""One trace per traced request, across Envoy, auth, router, guard, catalog (when the router's resolution cache
misses), metering and Triton, read back from Jaeger; and no trace at all for a request the edge did not sample.

The stack runs with `--trace-sampling 0`: only a request that asks for it (`x-client-trace-id`, README "Tracing")
is traced, so both outcomes are certain rather than likely."""

from __future__ import annotations

import secrets
import time

import httpx
import pytest
from llmaas.stack.jaeger import find_jaeger
from llmaas.stack.trace_query import JaegerQuery, edges

from tests.support.stack import TEST_MODEL, running_stack

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


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    if find_jaeger() is None:
        pytest.skip("Jaeger is not installed (deploy/install-jaeger.sh)")
    with running_stack(tmp_path_factory.mktemp("e2e-tracing") / "data", "--trace-sampling", "0") as s:
        yield s


def _request(stack, *, forced: bool) -> tuple[str, str]:
    """A chat request under a trace id of the test's choosing (the client's sampled traceparent, which Envoy
    continues); `forced`: with `x-client-trace-id`, the one thing that makes Envoy trace it at sampling 0.
    Returns (trace id, request id)."""
    trace_id = secrets.token_hex(16)
    headers = {"Authorization": f"Bearer {stack['api_key']}",
               "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"}
    if forced:
        headers["x-client-trace-id"] = trace_id
    resp = httpx.post(stack["base_url"] + "/chat/completions", timeout=60, headers=headers,
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "trace me"}],
                            "max_tokens": 3})
    assert resp.status_code == 200
    return trace_id, resp.headers["x-request-id"]


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


def _forced_trace_complete(stack) -> str:
    """A forced request whose trace crosses every hop; returns its trace id."""
    jaeger = JaegerQuery(stack["jaeger_query"])
    for _ in range(ATTEMPTS):
        trace_id, _ = _request(stack, forced=True)
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
    return trace_id


def test_a_forced_request_is_traced_across_every_hop(stack):
    trace_id = _forced_trace_complete(stack)
    # Nothing in a span may carry the prompt.
    assert "trace me" not in repr(JaegerQuery(stack["jaeger_query"]).trace(trace_id))


def _audit_trace_id(stack, request_id: str, timeout: float = 10) -> str:
    admin = httpx.Client(base_url=stack["admin_url"], headers={"Authorization": f"Bearer {stack['admin_token']}"},
                         timeout=30)
    deadline = time.monotonic() + timeout
    while True:  # the authorisation record is durable within a bounded delay (README "Audit trail")
        resp = admin.get(f"/tenants/{stack['tenant_id']}/audit", params={"limit": 200})
        assert resp.status_code == 200, resp.text
        for event in resp.json()["events"]:
            if event["action"] == "request.authorized" and event.get("request_id") == request_id:
                return event["trace_id"]
        assert time.monotonic() < deadline, f"no request.authorized record for {request_id}"
        time.sleep(0.2)


def test_an_unsampled_request_leaves_no_trace_but_keeps_its_trace_id(stack):
    jaeger = JaegerQuery(stack["jaeger_query"])
    # A client's sampled traceparent alone does not make Envoy trace (its own decision, 0 here, must agree).
    unsampled, request_id = _request(stack, forced=False)
    # Every process exports its spans in order: once a later forced request is complete in Jaeger, anything the
    # unsampled one had left would be there too.
    _forced_trace_complete(stack)
    left = sorted({span.service for span in jaeger.spans(unsampled)})
    assert not left, f"an unsampled request left spans in {left}"
    # Its context still crossed the hops: the audit record names the trace id the client sent.
    assert _audit_trace_id(stack, request_id) == unsampled


def test_an_embeddings_request_is_traced_like_chat(stack):
    """Envoy, auth, router, metering and Triton (no guard: it does not apply to embeddings); no input text in any
    span."""
    jaeger = JaegerQuery(stack["jaeger_query"])
    expected = {("envoy", "auth"), ("envoy", "router"), ("router", "metering"), ("router", "triton")}
    for _ in range(ATTEMPTS):
        trace_id = secrets.token_hex(16)
        resp = httpx.post(stack["base_url"] + "/embeddings", timeout=60, json={
            "model": "all-minilm:22m", "input": ["embed this secret phrase"]}, headers={
            "Authorization": f"Bearer {stack['api_key']}", "x-client-trace-id": trace_id,
            "traceparent": f"00-{trace_id}-{secrets.token_hex(8)}-01"})
        assert resp.status_code == 200, resp.text
        found = _edges_when_complete(jaeger, trace_id, expected, timeout=20)
        assert expected - {("router", "triton")} <= found, f"missing edges: {expected - found}"
        if ("router", "triton") in found:
            break
    assert expected <= found and ("router", "guard") not in found
    assert "secret phrase" not in repr(jaeger.trace(trace_id))
