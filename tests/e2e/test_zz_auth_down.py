"""Fail closed: when auth is slow or down, Envoy answers 503 and never lets a request through; once `llmaas up`
has restarted it, requests pass again. (Named to run last: it kills the stack's auth process.)"""

from __future__ import annotations

import os
import signal
import time

import httpx
import pytest

pytestmark = pytest.mark.e2e


def _models(stack) -> httpx.Response:
    return httpx.get(stack["base_url"] + "/models", headers={"Authorization": f"Bearer {stack['api_key']}"},
                     timeout=30)


def test_auth_slow_then_down_is_503(stack):
    assert _models(stack).status_code == 200
    pids = [pid for name, pid in stack["pids"].items() if name.startswith("auth")]
    assert len(pids) == 2, "the stack runs two auth replicas"
    for pid in pids:
        os.kill(pid, signal.SIGSTOP)  # slow: never answers within ext_authz's timeout
    try:
        resp = _models(stack)
    finally:
        for pid in pids:
            os.kill(pid, signal.SIGCONT)
    assert resp.status_code == 503 and resp.json()["error"]["type"] == "service_unavailable_error"
    assert _models(stack).status_code == 200
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # down
    resp = _models(stack)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
    deadline = time.monotonic() + 30
    while _models(stack).status_code != 200:  # the supervisor brings auth back
        assert time.monotonic() < deadline, "auth did not come back"
        time.sleep(0.3)
