"""What the fuzzers (test_fuzz_generated_openapi.py, test_fuzz_openai_spec.py) found, pinned as plain tests through
the real stack, so that a finding stays fixed whatever the fuzzers happen to generate next time."""

from __future__ import annotations

import httpx
import pytest

from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

# Valid HTTP header names and values that gRPC metadata does not allow (or reserves): each was a bodiless 500 on every
# transcoded path (the services' gRPC server refused the call). They mean nothing to the API and are ignored.
NOT_METADATA = [
    ("ak$w", "x"),             # a name outside [0-9a-z_.-]
    ("a#", "1"),
    ("x-trace-bin", "!!!"),    # "-bin": a base64 value is expected
    ("grpc-timeout", "zzz"),   # gRPC's own headers, not a REST client's
    ("grpc-timeout", "1n"),    # (this one cut every call short)
]


def _get(stack, path: str, token: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(stack["base_url"].removesuffix("/v1") + path, timeout=30,
                     headers={"Authorization": f"Bearer {token}", **headers})


@pytest.mark.parametrize(("name", "value"), NOT_METADATA)
def test_headers_grpc_cannot_carry_are_ignored(stack, name, value):
    header = {name: value}
    assert _get(stack, "/v1/models", stack["api_key"], header).json()["object"] == "list"
    assert _get(stack, "/v1/lifecycle", "", header).status_code == 200
    assert "tiers" in _get(stack, "/admin/v1/tiers", stack["admin_token"], header).json()
    chat = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}", **header},
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    assert chat.json()["object"] == "chat.completion"
