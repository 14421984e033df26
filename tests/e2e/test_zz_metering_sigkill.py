"""Metering killed with SIGKILL under load (the supervisor restarts it): no usage is lost or counted twice. The ledger
equals the sum of the usage the clients received. Named test_zz_* because it kills a service of the shared stack."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import httpx
import pytest

from tests.e2e.test_metering import admin, chat_body, new_key, new_tenant, usage
from tests.support.stack import _port_open

pytestmark = pytest.mark.e2e

CONCURRENCY = 16
KILL_AFTER = 60  # responses before the kill
AFTER_RESTART = 60  # successful responses after it, once metering is back


async def test_sigkill_under_load_loses_nothing_and_counts_nothing_twice(stack):
    tenant_id = new_tenant(stack, "sigkill")
    admin(stack, "PUT", f"/tenants/{tenant_id}/tier", json={"tier": "monthly"})  # no limit in the way
    _, key = new_key(stack, tenant_id)
    responses: list[httpx.Response] = []
    killed_at: list[int] = []  # how many responses had arrived at the kill

    def finished() -> bool:
        return bool(killed_at) and sum(r.status_code == 200 for r in responses[killed_at[0]:]) >= AFTER_RESTART

    async def kill_metering():
        while len(responses) < KILL_AFTER:
            await asyncio.sleep(0.005)
        os.kill(stack["pids"]["metering"], signal.SIGKILL)
        killed_at.append(len(responses))

    async with httpx.AsyncClient(base_url=stack["base_url"], timeout=60,
                                 headers={"Authorization": f"Bearer {key}"}) as client:
        deadline = time.monotonic() + 120

        async def worker(w: int):
            i = 0
            while not finished() and time.monotonic() < deadline:
                r = await client.post("/chat/completions", json=chat_body(w * 100_000 + i))
                responses.append(r)
                i += 1
                if r.status_code != 200:
                    await asyncio.sleep(0.05)  # metering is down: the router answers 503 at once

        killer = asyncio.create_task(kill_metering())
        await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
        await killer
    assert finished(), "metering did not come back"

    ok = [r.json()["usage"] for r in responses if r.status_code == 200]
    statuses = {r.status_code for r in responses}
    assert statuses <= {200, 503}, statuses  # refused while metering was down: 503, no usage given
    assert len(ok) > KILL_AFTER
    # Settlements held back while metering was down land once it is back (the router retries them).
    metering_port = int(stack["services"]["metering"].rsplit(":", 1)[1])
    deadline = time.monotonic() + 90
    while True:
        total = usage(stack, tenant_id)["total"] if _port_open(metering_port) else {}
        if int(total.get("requests", 0)) >= len(ok) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.5)
    await asyncio.sleep(1.0)  # and nothing more arrives later (no double count)
    total = usage(stack, tenant_id)["total"]
    assert int(total["requests"]) == len(ok)
    assert int(total["prompt_tokens"]) == sum(u["prompt_tokens"] for u in ok)
    assert int(total["completion_tokens"]) == sum(u["completion_tokens"] for u in ok)
