"""`llmaas up --ext-authz grpc`: Envoy asks auth over gRPC (envoy.service.auth.v3.Authorization) instead of HTTP
(the default, llmaas.auth.ext_authz_http), with the same answers: a valid key served with its identity and audited
with the client's address, a missing or wrong key refused in OpenAI's shape; and auth opens no ext_authz HTTP port."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from llmaas.stack.ports import StackPorts

from tests.support.stack import TEST_MODEL, running_stack

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    with running_stack(tmp_path_factory.mktemp("e2e-ext-authz-grpc") / "data", "--ext-authz", "grpc",
                       "--auth-replicas", "1") as s:
        yield s


def _listening(port: int) -> bool:
    return any(line.split()[3] == "0A" and int(line.split()[1].split(":")[1], 16) == port
               for line in Path("/proc/net/tcp").read_text().splitlines()[1:])


def test_a_valid_key_is_served_and_audited_with_the_clients_address(stack):
    resp = httpx.post(stack["base_url"] + "/chat/completions", timeout=60,
                      headers={"Authorization": f"Bearer {stack['api_key']}"},
                      json={"model": TEST_MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 3})
    assert resp.status_code == 200, resp.text
    request_id = resp.headers["x-request-id"]
    deadline = time.monotonic() + 10
    while True:  # the authorisation record is written behind (durable within its bound)
        audit = httpx.get(f"{stack['admin_url']}/tenants/{stack['tenant_id']}/audit", timeout=30,
                          headers={"Authorization": f"Bearer {stack['admin_token']}"},
                          params={"action": "request.authorized", "limit": 1000})
        assert audit.status_code == 200, audit.text
        mine = [e for e in audit.json().get("events", []) if e.get("request_id") == request_id]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine and mine[0]["endpoint"] == "POST /v1/chat/completions"
    assert mine[0]["client_address"] == "127.0.0.1"


@pytest.mark.parametrize(("key", "code"), [(None, "missing_api_key"),
                                           ("sk-llmaas-0123456789abcdef-wrong", "invalid_api_key")])
def test_a_missing_or_wrong_key_is_refused_in_openais_shape(stack, key, code):
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    resp = httpx.get(stack["base_url"] + "/models", headers=headers, timeout=30)
    assert resp.status_code == 401
    error = resp.json()["error"]
    assert error["code"] == code and set(error) == {"message", "type", "param", "code"}


def test_no_ext_authz_http_port_is_opened(stack):
    assert not _listening(StackPorts(stack["base_port"]).auth_authz_http(0))
