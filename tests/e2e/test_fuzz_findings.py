"""What the fuzzers (test_fuzz_generated_openapi.py, test_fuzz_openai_spec.py) found, pinned as plain tests through
the real stack, so that a finding stays fixed whatever the fuzzers happen to generate next time."""

from __future__ import annotations

import secrets

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


def _get(stack, path: str, token: str | None, headers: dict[str, str]) -> httpx.Response:
    return httpx.get(stack["base_url"].removesuffix("/v1") + path, timeout=30,
                     headers={**({"Authorization": f"Bearer {token}"} if token else {}), **headers})


@pytest.mark.parametrize(("name", "value"), NOT_METADATA)
def test_headers_grpc_cannot_carry_are_ignored(stack, name, value):
    header = {name: value}
    assert _get(stack, "/v1/models", stack["api_key"], header).json()["object"] == "list"
    assert _get(stack, "/v1/lifecycle", None, header).status_code == 200
    assert "tiers" in _get(stack, "/admin/v1/tiers", stack["admin_token"], header).json()
    chat = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}", **header},
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4})
    assert chat.status_code == 200, chat.text
    assert chat.json()["object"] == "chat.completion"


def _chat(stack, body: str) -> httpx.Response:
    return httpx.post(stack["base_url"] + "/chat/completions", content=body, timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}", "Content-Type": "application/json"})


# Valid JSON the transcoder refuses, each told "not valid JSON" (or a wrong cause) before.
REFUSED_VALID_JSON = [
    ('{"model": "m", "": 1}', "empty key", "invalid_value", None),
    ('{"model": "m", "stream_options": {"": 1}}', "empty key in 'stream_options'", "invalid_value", "stream_options"),
    ('{"model": "m", "temperature": 1e999}', "beyond the range of a double", "invalid_value", None),
    ('{"model": "m", "max_tokens": 99999999999}', "integer above", "integer_above_max_value", "max_tokens"),
    ('{"model": "m", "max_tokens": -99999999999}', "integer below", "integer_below_min_value", "max_tokens"),
    ('{"model": "m", "seed": "99999999999999999999"}', "integer above", "integer_above_max_value", "seed"),
    ('{"model": "\\ud800"}', "lone UTF-16 surrogate", "invalid_json", None),
]


@pytest.mark.parametrize(("body", "says", "code", "param"), REFUSED_VALID_JSON)
def test_valid_json_the_transcoder_refuses_is_told_by_cause(stack, body, says, code, param):
    response = _chat(stack, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert says in error["message"] and "not valid JSON" not in error["message"], error
    assert (error["code"], error["param"], error["type"]) == (code, param, "invalid_request_error")


# A query parameter the transcoder could not read was "The request could not be read: it is not a valid HTTP request."
BAD_QUERY = [
    ("/admin/v1/tenants/t/audit", {"after_seq": "-1"}, "after_seq", "a non-negative integer"),
    ("/admin/v1/tenants/t/audit", {"limit": "abc"}, "limit", "a non-negative integer"),
    ("/admin/v1/tenants/t/keys", {"include_revoked": "maybe"}, "include_revoked", "a boolean"),
]


@pytest.mark.parametrize(("path", "query", "param", "expected"), BAD_QUERY)
def test_a_query_parameter_of_the_wrong_type_is_named(stack, path, query, param, expected):
    response = httpx.get(stack["base_url"].removesuffix("/v1") + path, params=query, timeout=30,
                         headers={"Authorization": f"Bearer {stack['admin_token']}"})
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error == {"message": f"Invalid type for '{param}': expected {expected}.", "type": "invalid_request_error",
                     "param": param, "code": "invalid_type"}


class Admin:
    """The admin REST API with the platform admin token."""

    def __init__(self, stack) -> None:
        self.client = httpx.Client(base_url=stack["base_url"].removesuffix("/v1") + "/admin/v1", timeout=30,
                                   headers={"Authorization": f"Bearer {stack['admin_token']}"})

    def ok(self, response: httpx.Response) -> dict:
        assert response.status_code == 200, response.text
        return response.json()


@pytest.fixture(scope="module")
def admin(stack) -> Admin:
    return Admin(stack)


@pytest.fixture(scope="module")
def tenant(admin) -> str:
    return admin.ok(admin.client.post("/tenants", json={"name": f"findings-{secrets.token_hex(4)}"}))["tenant"][
        "tenant_id"]


def _refused(response: httpx.Response, param: str) -> None:
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param and response.json()["error"]["code"] == "invalid_value"


# Values in range of their proto type that the services could not store or compute with: each was a 500.
def test_a_rotation_period_or_grace_that_overflows_a_date_is_refused(admin, tenant):
    keys = f"/tenants/{tenant}/keys"
    _refused(admin.client.post(keys, json={"name": "a", "rotation_period_days": 3_000_000}), "rotation_period_days")
    _refused(admin.client.post(keys, json={"name": "a", "rotation_grace_seconds": 2**31 - 1}),
             "rotation_grace_seconds")
    key = admin.ok(admin.client.post(keys, json={"name": "a", "rotation_period_days": 3650,
                                                 "rotation_grace_seconds": 365 * 86400}))["key"]
    assert key["rotation_period_days"] == 3650
    _refused(admin.client.post(f"{keys}/{key['key_id']}/rotate", json={"grace_seconds": 2**31 - 1}), "grace_seconds")
    admin.ok(admin.client.post(f"{keys}/{key['key_id']}/rotate", json={"grace_seconds": 365 * 86400}))


def test_an_audit_page_after_any_possible_sequence_number_is_empty(admin, tenant):
    for after in (2**63 - 1, 2**63, 2**64 - 1):
        page = admin.ok(admin.client.get(f"/tenants/{tenant}/audit", params={"after_seq": str(after)}))
        assert page.get("events", []) == [] and page.get("next_after_seq", "0") == "0"


def test_a_budget_beyond_what_can_be_counted_is_refused(admin, tenant):
    tier = admin.ok(admin.client.get("/tiers"))["tiers"][0]["id"]
    for budget in ("1e999", "9" * 20, "1000000000.000000001"):
        _refused(admin.client.put(f"/tenants/{tenant}/tier", json={"tier": tier, "monthly_budget_eur": budget}),
                 "monthly_budget_eur")
    body = admin.ok(admin.client.put(f"/tenants/{tenant}/tier", json={"tier": tier, "monthly_budget_eur": "1000000000"}))
    assert body["tier"]["monthly_budget_eur"] == "1000000000.000000000"
