"""A burst of invalid keys through the real stack is cheap to refuse (README, "Tenants, keys and the audit trail"):
each auth replica answers 401 to an address's first failures and 429 with Retry-After past its budget; the audit
trail gains a few records carrying counts that add up to every refused request, and its chain verifies; a valid
key from the same address (all the tests' traffic comes from 127.0.0.1) is served throughout, its p99 within a
stated bound of its own p99 measured alone just before.

Named test_zz_*: it spends 127.0.0.1's failure budget, and waits for it to refill before it ends.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import sqlite3
import statistics
import threading
import time
from pathlib import Path

import httpx
import pytest
from llmaas.auth.abuse import DENIED_WINDOW, FAILURE_BURST, FAILURE_RATE

pytestmark = pytest.mark.e2e

ATTACKERS = 4  # concurrent connections
PER_ATTACKER = 200
BASELINE_REQUESTS = 80
# The valid key's p99 during the burst may be at most this many times its p99 alone, plus this many seconds (2 cores
# shared by Envoy, two auth replicas, the catalog and this process's four attacking threads).
BOUND_FACTOR = 3.0
BOUND_SECONDS = 0.05


def _bad_key(i: int) -> str | None:
    """Unknown well-formed keys (a database read each, once past the cache), malformed ones, and none at all."""
    kind = i % 4
    if kind == 0:
        return None
    if kind == 1:
        return "not-a-key-" + secrets.token_hex(4)
    return f"sk-llmaas-{secrets.token_hex(8)}-{secrets.token_urlsafe(32)}"


def _attack(base_url: str, seed: int, statuses: list[int], retry_afters: set[str]) -> None:
    with httpx.Client(timeout=30) as client:
        for i in range(seed, seed + PER_ATTACKER):
            key = _bad_key(i)
            r = client.get(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"} if key else {})
            statuses.append(r.status_code)
            if r.status_code == 429:
                error = r.json()["error"]
                assert error["code"] == "rate_limit_exceeded" and error["type"] == "rate_limit_error", error
                retry_afters.add(r.headers.get("retry-after", ""))
            else:
                assert r.status_code == 401 and r.json()["error"]["code"] in (
                    "missing_api_key", "invalid_api_key"), (r.status_code, r.text)


def _valid(client: httpx.Client, base_url: str, key: str, n: int | None = None,
           stop: threading.Event | None = None) -> list[float]:
    latencies = []
    while (n is not None and len(latencies) < n) or (stop is not None and not stop.is_set()):
        t0 = time.perf_counter()
        r = client.get(f"{base_url}/models", headers={"Authorization": f"Bearer {key}"})
        latencies.append(time.perf_counter() - t0)
        assert r.status_code == 200, r.text  # never refused for the address's failures
    return latencies


def _denied(db: Path, after_seq: int) -> tuple[int, int, int]:
    """(rows, requests they stand for, last seq) of 127.0.0.1's request.denied records after `after_seq`."""
    with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True)) as conn:
        rows, requests = conn.execute(
            "SELECT COUNT(*), COALESCE(SUM(count), 0) FROM audit_events WHERE action = 'request.denied' "
            "AND client_address = '127.0.0.1' AND seq > ?", (after_seq,)).fetchone()
        last = conn.execute("SELECT COALESCE(MAX(seq), 0) FROM audit_events").fetchone()[0]
    return rows, requests, last


def _auth_cpu(stack) -> float:
    """CPU seconds the auth replicas have used so far (Linux /proc)."""
    total = 0
    # stack.json's pids: kept current by the supervisor when it restarts a replica (an earlier test may have made it).
    pids = json.loads((Path(stack["data_dir"]) / "stack.json").read_text())["pids"]
    for name, pid in pids.items():
        if name == "auth" or name.startswith("auth-"):
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _p(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def test_a_burst_of_invalid_keys_is_limited_and_counted_and_valid_keys_are_served(stack):
    base_url, db = stack["base_url"], Path(stack["data_dir"]) / "auth.db"
    replicas = len(stack["auth_replicas"])
    time.sleep(FAILURE_BURST / FAILURE_RATE)  # whatever earlier tests failed from 127.0.0.1 has refilled
    *_, start_seq = _denied(db, 0)
    with httpx.Client(timeout=30) as client:
        _valid(client, base_url, stack["api_key"], 10)  # warm-up (connections, caches)
        cpu = _auth_cpu(stack)
        alone = _valid(client, base_url, stack["api_key"], BASELINE_REQUESTS)
        cpu_per_valid = (_auth_cpu(stack) - cpu) / len(alone)

        statuses: list[int] = []
        retry_afters: set[str] = set()
        errors: list[BaseException] = []

        def attacker(seed: int) -> None:
            try:
                _attack(base_url, seed, statuses, retry_afters)
            except BaseException as e:  # noqa: BLE001 - reported by the test below
                errors.append(e)

        threads = [threading.Thread(target=attacker, args=(i * PER_ATTACKER,), daemon=True)
                   for i in range(ATTACKERS)]
        t0, cpu = time.monotonic(), _auth_cpu(stack)
        for t in threads:
            t.start()
        done = threading.Event()
        threading.Thread(target=lambda: ([t.join() for t in threads], done.set()), daemon=True).start()
        during = _valid(client, base_url, stack["api_key"], stop=done)
        burst_seconds = time.monotonic() - t0
    assert not errors, errors[0]

    total = ATTACKERS * PER_ATTACKER
    counted = {s: statuses.count(s) for s in (401, 429)}
    # Every failure counted, in a handful of records: poll until the last window is written (window + audit bound).
    deadline = time.monotonic() + DENIED_WINDOW + 10.0
    while (found := _denied(db, start_seq))[1] < total and time.monotonic() < deadline:
        time.sleep(0.2)
    rows, requests, _ = found
    # Auth's CPU for the refusals (their counts' commits included), less what the valid requests meanwhile cost.
    cpu_per_refusal = (_auth_cpu(stack) - cpu - cpu_per_valid * len(during)) / total
    bound = BOUND_FACTOR * _p(alone, 99) + BOUND_SECONDS
    print(f"\nfailed-auth burst: {total} invalid-key requests from {ATTACKERS} connections in {burst_seconds:.1f} s: "
          f"{counted[401]} x 401, {counted[429]} x 429 (Retry-After {sorted(retry_afters)}); audit: {rows} records "
          f"counting {requests} requests; auth CPU about {cpu_per_refusal * 1e6:.0f} us a refusal "
          f"({cpu_per_valid * 1e6:.0f} us a valid request); valid key from the same address: alone p50 "
          f"{statistics.median(alone) * 1e3:.1f} ms, p99 {_p(alone, 99) * 1e3:.1f} ms ({len(alone)} requests); "
          f"during p50 {statistics.median(during) * 1e3:.1f} ms, p99 {_p(during, 99) * 1e3:.1f} ms, max "
          f"{max(during) * 1e3:.1f} ms ({len(during)} requests, 0 refused); bound {bound * 1e3:.0f} ms "
          f"({BOUND_FACTOR:g} x p99 alone + {BOUND_SECONDS * 1e3:.0f} ms)")

    assert counted[401] + counted[429] == total
    # Each replica answers its own budget with 401s (the burst, then the rate), the rest are 429s.
    assert counted[401] <= replicas * (FAILURE_BURST + FAILURE_RATE * (burst_seconds + 1)), counted
    assert counted[429] >= total // 2, counted
    assert retry_afters and all(int(v) >= 1 for v in retry_afters), retry_afters
    # Nothing lost, little written: one record per (replica, reason, status) and window.
    assert requests == total, (rows, requests)
    assert rows <= total / 10, (rows, requests)
    verified = httpx.post(f"{stack['admin_url']}/audit/verify",
                          headers={"Authorization": f"Bearer {stack['admin_token']}"}, timeout=60).json()
    assert verified.get("ok") is True, verified
    # The valid key's latency during the burst, against its own alone.
    assert len(during) >= 20
    assert _p(during, 99) <= bound

    time.sleep(FAILURE_BURST / FAILURE_RATE)  # 127.0.0.1's budget refilled for whatever runs next
