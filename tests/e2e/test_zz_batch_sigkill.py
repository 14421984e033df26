"""The router (and so its batch worker) killed with SIGKILL in the middle of a batch; the supervisor restarts it and
the batch resumes: every line is answered exactly once, and the tenant is billed, at the batch price, exactly the
usage the output file reports. Named test_zz_* because it kills a service of the shared stack."""

from __future__ import annotations

import os
import signal
import time

import openai
import pytest

from tests.e2e.test_batches import chat_line, content, settled, tenant_client, upload, wait
from tests.support.stack import _port_open, live_pids

pytestmark = pytest.mark.e2e

LINES = 120


def test_a_batch_survives_its_worker_killed(stack):
    client, tenant_id = tenant_client(stack, "batch-kill")
    lines = [chat_line(i, max_tokens=16) for i in range(LINES)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    deadline = time.monotonic() + 120
    while (b := client.batches.retrieve(batch.id)).request_counts.completed < LINES // 4:
        assert b.status in ("validating", "in_progress") and time.monotonic() < deadline, b
        time.sleep(0.1)
    assert b.request_counts.completed < LINES, "the batch ended before the kill: make it longer"
    router_pid = live_pids(stack)["router"]
    os.kill(router_pid, signal.SIGKILL)
    killed_at = time.monotonic()

    # The supervisor restarts it; the restarted router takes its batch back (the same worker id) and resumes.
    router_port = int(stack["services"]["router"].rsplit(":", 1)[1])
    while not _port_open(router_port):
        assert time.monotonic() - killed_at < 60
        time.sleep(0.1)
    done = None
    while done is None:
        try:
            done = wait(client, batch.id, timeout=180)
        except (openai.APIConnectionError, openai.InternalServerError, openai.APIStatusError):
            time.sleep(0.5)  # the edge answers 503 while the router is down
    assert done.status == "completed" and done.request_counts.completed == LINES, done

    out = content(client, done.output_file_id)
    ids = [o["custom_id"] for o in out]
    assert sorted(ids) == sorted(x["custom_id"] for x in lines) and len(set(ids)) == LINES  # each exactly once
    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
    total = settled(stack, tenant_id, LINES)
    time.sleep(1.0)  # and nothing more arrives later (no double count)
    total = settled(stack, tenant_id, LINES)
    assert int(total["requests"]) == LINES
    assert (int(total["prompt_tokens"]), int(total["completion_tokens"])) == (prompt, completion)
    assert total["cost_eur"] == f"{(prompt * 900 + completion * 4000) / 1e9:.9f}"
