"""Fail closed: when auth is slow or down, or its audit store stops taking writes, Envoy answers 503 and never lets a
request through unaudited; once `llmaas up` has restarted auth, or the store is back, requests pass again. (Named to
run last: it kills the stack's auth process.)"""

from __future__ import annotations

import os
import signal
import sqlite3
import time
from pathlib import Path

import httpx
import pytest
from llmaas.auth import keys

pytestmark = pytest.mark.e2e


def _models(stack) -> httpx.Response:
    return httpx.get(stack["base_url"] + "/models", headers={"Authorization": f"Bearer {stack['api_key']}"},
                     timeout=30)


def _authorized_records(stack, after_seq: int = 0) -> tuple[int, int]:
    """How many request.authorized records the stack's key has after `after_seq`, and the last one's seq."""
    key_id = keys.parse(stack["api_key"])[0]
    count, seq = 0, after_seq
    while True:
        resp = httpx.get(f"{stack['admin_url']}/tenants/{stack['tenant_id']}/audit", timeout=30,
                         headers={"Authorization": f"Bearer {stack['admin_token']}"},
                         params={"key_id": key_id, "action": "request.authorized", "after_seq": seq, "limit": 1000})
        assert resp.status_code == 200, resp.text
        events = resp.json().get("events", [])
        count += len(events)
        seq = int(events[-1]["seq"]) if events else seq
        if len(events) < 1000:
            return count, seq


def test_audit_store_down_is_503_and_every_request_let_through_is_audited(stack):
    """Auth writes a request's audit record behind (durable within its bound). With its database locked (no commit
    goes through), requests are 503 once a record has waited longer than the bound, never passes: at first because
    they wait for their own record and Envoy gives up, then because the store's commits fail and auth denies. Every
    request that was let through has its record once the store is back."""
    assert _models(stack).status_code == 200
    time.sleep(0.5)  # its record is durable
    _, start = _authorized_records(stack)
    lock = sqlite3.connect(Path(stack["data_dir"]) / "auth.db", timeout=10, isolation_level=None)
    lock.execute("BEGIN EXCLUSIVE")  # no other writer until it ends (the keys stay readable: WAL)
    statuses, codes, denied_by_auth = [], set(), 0
    try:
        # Past SQLite's busy timeout (5 s): the writers' commits fail, and auth itself denies.
        until = time.monotonic() + 12
        while time.monotonic() < until and denied_by_auth < 3:
            resp = _models(stack)
            statuses.append(resp.status_code)
            if resp.status_code == 503:
                error = resp.json()["error"]
                codes.add(error["code"])
                # Either auth's own denial (its audit store is failing: its message and Retry-After), or Envoy's
                # (auth not answering in time: a request waiting for its record's commit), which names no internals.
                if "cannot be audited" in error["message"]:
                    denied_by_auth += 1
                    assert resp.headers.get("retry-after") == "1"
                else:
                    assert error["message"] == "The service is temporarily unavailable. Please retry."
    finally:
        lock.execute("ROLLBACK")
        lock.close()
    assert set(statuses) <= {200, 503} and codes == {"service_unavailable"}
    assert statuses[-1] == 503 and denied_by_auth == 3, statuses
    passed = statuses.count(200)
    deadline = time.monotonic() + 15
    while _models(stack).status_code != 200:  # the writers' retries commit, and requests pass again
        assert time.monotonic() < deadline, "requests did not pass again after the audit store came back"
        time.sleep(0.2)
    passed += 1
    time.sleep(0.5)  # the last one's record is written behind
    audited, _ = _authorized_records(stack, start)
    refused_after = next(i for i, status in enumerate(statuses) if status == 503)
    print(f"audit store locked: {statuses.count(200)} requests passed (the first 503 after {refused_after}), then "
          f"{statuses.count(503)} refused; {audited} authorisation records for {passed} passed requests")
    # Every request let through is audited (a request Envoy gave up on while it waited for its record may be too).
    assert audited >= passed, (audited, passed)


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
    # Envoy's own 5xx names no internal detail (it said "ext_authz_error" before).
    assert resp.json()["error"]["message"] == "The service is temporarily unavailable. Please retry."
    assert _models(stack).status_code == 200
    for pid in pids:
        os.kill(pid, signal.SIGKILL)  # down
    resp = _models(stack)
    assert resp.status_code == 503 and resp.json()["error"]["code"] == "service_unavailable"
    deadline, in_a_row = time.monotonic() + 30, 0
    while in_a_row < 6:  # the supervisor brings both replicas back (Envoy alternates between them): the next test
        in_a_row = in_a_row + 1 if _models(stack).status_code == 200 else 0  # finds the stack whole
        assert time.monotonic() < deadline, "auth did not come back"
        time.sleep(0.3)
