"""What a refused request costs auth: CPU per ext_authz Check with a bad credential (a mix of unknown well-formed keys,
malformed ones and none), in process on a scratch SQLite database with the service's settings, its audit commits
included (process CPU time, every thread).

    .venv/bin/python -m bench.auth_refusals [--requests 3000]

- one record each: every failure submitted as its own audit record (auth before llmaas.auth.abuse);
- counted, within budget: every failure answered 401 and counted (a budget no burst reaches);
- counted, past budget: the default budget (50, then 10 a second), so nearly all are 429s.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import tempfile
import time
import uuid
from pathlib import Path

from envoy.service.auth.v3 import external_auth_pb2
from llmaas.auth.abuse import DenialTally, FailureLimiter
from llmaas.auth.audit import AuditLog, AuditStore
from llmaas.auth.authorizer import Attempt, Authorizer, denied_record
from llmaas.auth.ext_authz import ExtAuthzServicer
from llmaas.common.errors import ApiError

from tests.support.auth_store import SECRET, auth_engine, key_store


class OneRecordEach(Authorizer):
    """The path before llmaas.auth.abuse: a failure is submitted like any record (bench only)."""

    def _failed(self, error: ApiError, attempt: Attempt) -> ApiError:
        self._pending = self._audit.submit(denied_record(attempt, 401, error.code or ""))
        return error

    async def authorize(self, token, attempt, *, admin_api):
        self._pending = None
        decision = await super().authorize(token, attempt, admin_api=admin_api)
        if self._pending is not None:
            await self._pending
        return decision


def _requests(n: int) -> list[external_auth_pb2.CheckRequest]:
    out = []
    for i in range(n):
        request = external_auth_pb2.CheckRequest()
        http = request.attributes.request.http
        http.method, http.path = "GET", "/v1/models"
        if i % 4:
            http.headers["authorization"] = "Bearer " + (
                "not-a-key" if i % 4 == 1 else f"sk-llmaas-{secrets.token_hex(8)}-{secrets.token_urlsafe(32)}")
        http.headers["x-request-id"] = str(uuid.uuid4())
        request.attributes.source.address.socket_address.address = "127.0.0.1"
        out.append(request)
    return out


async def _measure(name: str, make, n: int, work: Path) -> None:
    engine = auth_engine(f"sqlite:///{work / (name.replace(' ', '_') + '.db')}")
    log = AuditLog(AuditStore(engine))
    authorizer = make(key_store(engine, cache_seconds=2.0), log)
    servicer = ExtAuthzServicer(authorizer, SECRET)
    requests = _requests(n)
    cpu, wall = time.process_time(), time.perf_counter()
    for request in requests:
        await servicer.Check(request, None)
    await authorizer.close()
    await log.flush()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT COUNT(*), SUM(count) FROM audit_events").one()
    await log.close()
    print(f"{name:28} {cpu / n * 1e6:7.0f} us CPU, {wall / n * 1e6:7.0f} us wall per refused request; "
          f"{rows[0]} audit records for {rows[1]} requests")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=3000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for _ in range(2):  # alternating rounds: the machine's load moves them alike
            await _measure("one record each", lambda store, log: OneRecordEach(store, log, "admin"),
                           args.requests, work)
            await _measure("counted, within budget", lambda store, log: Authorizer(
                store, log, "admin", limiter=FailureLimiter(burst=10**9), tally=DenialTally(log)),
                args.requests, work)
            await _measure("counted, past budget", lambda store, log: Authorizer(store, log, "admin"),
                           args.requests, work)
            work = Path(tempfile.mkdtemp(dir=tmp))


if __name__ == "__main__":
    asyncio.run(main())
