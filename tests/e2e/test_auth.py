"""Keys, permissions, rotation, revocation and the audit trail, through the real Envoy (ext_authz) and the admin
REST API, with the stack's two auth replicas sharing one database."""

from __future__ import annotations

import datetime as dt
import os
import secrets
import signal
import time
from pathlib import Path

import grpc
import httpx
import pytest
from llmaas.auth import keys
from llmaas.auth.store import VERIFY_CACHE_SECONDS
from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.identity import Identity, encode_identity
from llmaas.router.v1 import router_pb2, router_pb2_grpc

from tests.support.service_auth import internal_secret, service_metadata
from tests.support.stack import REAL_MODEL, TEST_MODEL

pytestmark = pytest.mark.e2e

# Revocation reaches every replica within the verification cache's lifetime; the slack covers a loaded machine.
REVOCATION_BOUND = VERIFY_CACHE_SECONDS + 1.5


class Admin:
    """The admin REST API under /admin/v1, with one credential."""

    def __init__(self, stack, token: str) -> None:
        self._client = httpx.Client(base_url=stack["admin_url"], headers={"Authorization": f"Bearer {token}"},
                                    timeout=30)

    def post(self, path: str, body: dict | None = None) -> httpx.Response:
        return self._client.post(path, json=body or {})

    def get(self, path: str, **params) -> httpx.Response:
        return self._client.get(path, params=params)


def _ok(resp: httpx.Response) -> dict:
    assert resp.status_code == 200, resp.text
    return resp.json()


@pytest.fixture(scope="module")
def admin(stack) -> Admin:
    return Admin(stack, stack["admin_token"])


@pytest.fixture(scope="module")
def tenant(admin) -> str:
    return _ok(admin.post("/tenants", {"name": f"auth-e2e-{secrets.token_hex(4)}"}))["tenant"]["tenant_id"]


def new_key(admin: Admin, tenant: str, **fields) -> tuple[str, str]:
    body = _ok(admin.post(f"/tenants/{tenant}/keys", {"name": "e2e", **fields}))
    return body["key_id"], body["api_key"]


def models(stack, api_key: str, headers: dict | None = None) -> httpx.Response:
    return httpx.get(stack["base_url"] + "/models", timeout=30,
                     headers={**({"Authorization": f"Bearer {api_key}"} if api_key else {}), **(headers or {})})


def chat(stack, api_key: str, model: str = TEST_MODEL, content: str = "hello auth") -> httpx.Response:
    return httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {api_key}"},
                      json={"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 4})


def _error(resp: httpx.Response, status: int, code: str) -> None:
    assert resp.status_code == status, resp.text
    err = resp.json()["error"]
    assert err["code"] == code and err["message"] and set(err) == {"message", "type", "param", "code"}


def test_allowed_wrong_and_missing_keys(stack, admin, tenant):
    _, key = new_key(admin, tenant)
    assert models(stack, key).status_code == 200
    assert chat(stack, key).status_code == 200
    _error(models(stack, key[:-2] + "xx"), 401, "invalid_api_key")
    _error(models(stack, "sk-llmaas-0123456789abcdef-unknown"), 401, "invalid_api_key")
    _error(models(stack, ""), 401, "missing_api_key")


def test_a_key_with_labels_is_created_and_a_misspelled_field_is_refused(stack, admin, tenant):
    # labels is a map: its keys are the client's, never unknown fields (the edge lists them one level in).
    key_id, api_key = new_key(admin, tenant, labels={"team": "data", "cost-center": "42"})
    assert models(stack, api_key).status_code == 200
    r = admin.post(f"/tenants/{tenant}/keys", {"name": "e2e", "labells": {"team": "data"}})
    assert r.status_code == 400 and r.json()["error"]["param"] == "labells"


def test_model_not_permitted(stack, admin, tenant):
    _, key = new_key(admin, tenant, allowed_models=["llmaas-test:det*"])
    listed = [m["id"] for m in _ok(models(stack, key))["data"]]
    assert listed == [TEST_MODEL]
    assert chat(stack, key).status_code == 200
    _error(chat(stack, key, REAL_MODEL), 403, "permission_denied")
    resp = httpx.get(f"{stack['base_url']}/models/{REAL_MODEL}", headers={"Authorization": f"Bearer {key}"})
    _error(resp, 404, "model_not_found")


def test_expired_key(stack, admin, tenant):
    expires = dt.datetime.now(dt.UTC) + dt.timedelta(seconds=3)
    _, key = new_key(admin, tenant, expires_at=expires.isoformat().replace("+00:00", "Z"))
    assert models(stack, key).status_code == 200
    time.sleep(max(0.0, (expires - dt.datetime.now(dt.UTC)).total_seconds()) + 0.2)
    _error(models(stack, key), 401, "expired_api_key")


def test_revocation_reaches_both_replicas_within_the_bound(stack, admin, tenant):
    key_id, key = new_key(admin, tenant)
    for _ in range(6):  # Envoy balances over both replicas: both have the key cached now
        assert models(stack, key).status_code == 200
    _ok(admin.post(f"/tenants/{tenant}/keys/{key_id}/revoke"))
    revoked_at = time.monotonic()
    while True:
        statuses = [models(stack, key).status_code for _ in range(6)]
        if set(statuses) == {401}:
            break
        assert time.monotonic() - revoked_at < REVOCATION_BOUND, f"still accepted: {statuses}"
        time.sleep(0.1)
    _error(models(stack, key), 401, "revoked_api_key")
    for address in stack["auth_replicas"]:  # and each replica, asked directly
        with grpc.insecure_channel(address) as channel, pytest.raises(grpc.RpcError) as e:
            auth_pb2_grpc.AuthInternalServiceStub(channel).Authenticate(
                auth_pb2.AuthenticateRequest(api_key=key), metadata=service_metadata(stack, "auth"), timeout=10)
        assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert len(stack["auth_replicas"]) == 2


def test_rotation_grace_window(stack, admin, tenant):
    key_id, old = new_key(admin, tenant)
    assert models(stack, old).status_code == 200
    body = _ok(admin.post(f"/tenants/{tenant}/keys/{key_id}/rotate", {"grace_seconds": 3}))
    new = body["api_key"]
    assert new != old and body["key"]["key_id"] == key_id and body["key"]["previous_valid_until"]
    for _ in range(4):  # both secrets, on both replicas, right away
        assert models(stack, new).status_code == 200
        assert models(stack, old).status_code == 200
    time.sleep(3 + VERIFY_CACHE_SECONDS)
    _error(models(stack, old), 401, "invalid_api_key")
    assert models(stack, new).status_code == 200


def test_spoofed_identity_headers_are_never_trusted(stack, admin, tenant):
    _, limited = new_key(admin, tenant, allowed_models=[TEST_MODEL])
    # Even a correctly signed identity (here made with the stack's own secret) sent by a client is overwritten
    # by ext_authz with the identity of the key actually presented.
    unrestricted = encode_identity(Identity(tenant, "someone-else"), internal_secret(stack))
    forged = {"x-llmaas-identity": unrestricted, "x-llmaas-client-address": "10.6.6.6"}
    listed = [m["id"] for m in _ok(models(stack, limited, forged))["data"]]
    assert listed == [TEST_MODEL]
    _error(models(stack, "", forged), 401, "missing_api_key")
    # Straight to the router's port: an identity header that does not verify is refused.
    request = router_pb2.CreateChatCompletionRequest(model=TEST_MODEL, max_tokens=2)
    request.messages.add(role="user").content.string_value = "hi"
    bad = encode_identity(Identity(tenant, "x"), "not-the-stack-secret-but-long-enough-123456")
    with grpc.insecure_channel(stack["services"]["router"]) as channel, pytest.raises(grpc.RpcError) as e:
        router_pb2_grpc.RouterServiceStub(channel).CreateChatCompletion(
            request, metadata=(("x-llmaas-identity", bad),), timeout=10)
    assert e.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_tenant_admin_key_is_confined_to_its_tenant(stack, admin, tenant):
    other = _ok(admin.post("/tenants", {"name": f"other-{secrets.token_hex(4)}"}))["tenant"]["tenant_id"]
    _, admin_key = new_key(admin, tenant, role="tenant_admin")
    mine = Admin(stack, admin_key)
    key_id = _ok(mine.post(f"/tenants/{tenant}/keys", {"name": "made-by-tenant-admin"}))["key_id"]
    assert key_id in [k["key_id"] for k in _ok(mine.get(f"/tenants/{tenant}/keys"))["keys"]]
    _error(mine.get(f"/tenants/{other}/keys"), 403, "permission_denied")
    _error(mine.get(f"/tenants/{other}/audit"), 403, "permission_denied")
    _error(mine.get("/tenants"), 403, "permission_denied")
    _error(models(stack, admin_key), 403, "permission_denied")  # admin keys do not call models
    _, app_key = new_key(admin, tenant)
    _error(Admin(stack, app_key).get(f"/tenants/{tenant}/keys"), 403, "permission_denied")


def test_audit_trail_records_requests_and_admin_actions(stack, admin, tenant):
    key_id, key = new_key(admin, tenant)
    resp = chat(stack, key)
    assert resp.status_code == 200
    request_id = resp.headers["x-request-id"]
    usage = resp.json()["usage"]
    _error(chat(stack, key, "no-such-model"), 404, "model_not_found")
    deadline = time.monotonic() + 10
    while True:  # the completion record is written after the response
        events = _ok(admin.get(f"/tenants/{tenant}/audit", key_id=key_id, limit=100))["events"]
        if sum(e["action"] == "request.completed" for e in events) == 2 or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert all(e["tenant_id"] == tenant for e in events)
    created = [e for e in events if e["action"] == "key.create"]
    assert created and created[0]["actor"] == "admin-token"
    authorized = [e for e in events if e["action"] == "request.authorized" and e.get("request_id") == request_id]
    assert authorized and authorized[0]["endpoint"] == "POST /v1/chat/completions"
    assert authorized[0]["client_address"] == "127.0.0.1" and len(authorized[0]["trace_id"]) == 32
    completed = {e["request_id"]: e for e in events if e["action"] == "request.completed"}
    done = completed[request_id]
    assert done["model"] == TEST_MODEL and done["status"] == 200
    assert int(done["prompt_tokens"]) == usage["prompt_tokens"]
    assert int(done["completion_tokens"]) == usage["completion_tokens"]
    assert [e for e in completed.values() if e["status"] == 404 and e["detail"] == "model_not_found"]
    report = _ok(admin.post("/audit/verify"))
    assert report["ok"] is True and int(report["events_checked"]) >= len(events)


def test_no_api_key_or_prompt_in_any_log_or_database(stack, admin, tenant):
    marker = "secretplan" + secrets.token_hex(6)
    key_id, key = new_key(admin, tenant)
    assert chat(stack, key, content=f"{marker} quarterly").status_code == 200
    rotated = _ok(admin.post(f"/tenants/{tenant}/keys/{key_id}/rotate", {"grace_seconds": 60}))["api_key"]
    assert models(stack, rotated).status_code == 200
    time.sleep(1.0)  # let the completion record land
    data_dir = Path(stack["data_dir"])
    files = [p for p in data_dir.rglob("*") if p.is_file() and p.name not in ("stack.json", "admin.json")]
    assert any(p.suffix == ".log" for p in files)
    for needle in (marker, keys.parse(key)[1], keys.parse(rotated)[1], stack["admin_token"]):
        leaked = [str(p) for p in files if needle.encode() in p.read_bytes()]
        assert not leaked, f"secret or prompt text found in {leaked}"


def test_one_auth_replica_down_is_invisible_to_clients(stack, admin, tenant):
    """Envoy health-checks the replicas: while one is stopped, the other answers every request."""
    _, key = new_key(admin, tenant)
    pid = stack["pids"]["auth-2"]
    os.kill(pid, signal.SIGSTOP)
    try:
        time.sleep(2.5)  # health checks notice within about a second
        statuses = [models(stack, key).status_code for _ in range(20)]
    finally:
        os.kill(pid, signal.SIGCONT)
    assert statuses == [200] * 20
