"""The Files and Batch API through Envoy with the official OpenAI SDK, unmodified: the whole flow at the batch price,
bad files and bad lines, cancel, tenant isolation, and files encrypted at rest. (A router killed mid-batch:
test_zz_batch_sigkill.py.)"""

from __future__ import annotations

import io
import json
import secrets
import time
from pathlib import Path

import openai
import pytest

from tests.e2e.test_metering import admin, new_key, new_tenant, usage
from tests.support.stack import TEST_MODEL

pytestmark = pytest.mark.e2e

EMBEDDING_MODEL = "all-minilm:22m"
SLOW_MODEL = "llmaas-test:slow"
FINAL = ("completed", "failed", "expired", "cancelled")


def tenant_client(stack, prefix: str) -> tuple[openai.OpenAI, str]:
    tenant_id = new_tenant(stack, prefix)
    admin(stack, "PUT", f"/tenants/{tenant_id}/tier", json={"tier": "monthly"})  # no rate limit in the way
    _, key = new_key(stack, tenant_id)
    return openai.OpenAI(base_url=stack["base_url"], api_key=key, max_retries=0, timeout=60), tenant_id


def chat_line(i: int, content: str = "", model: str = TEST_MODEL, **body) -> dict:
    return {"custom_id": f"req-{i}", "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": model, "messages": [{"role": "user", "content": content or f"Count to {i}."}],
                     "max_tokens": 8, **body}}


def jsonl(lines: list[dict | str]) -> bytes:
    return b"".join((x if isinstance(x, str) else json.dumps(x)).encode() + b"\n" for x in lines)


def upload(client: openai.OpenAI, lines: list[dict | str], name: str = "input.jsonl"):
    return client.files.create(file=(name, io.BytesIO(jsonl(lines))), purpose="batch")


def wait(client: openai.OpenAI, batch_id: str, statuses=FINAL, timeout: float = 180.0):
    deadline = time.monotonic() + timeout
    while (batch := client.batches.retrieve(batch_id)).status not in statuses:
        assert time.monotonic() < deadline, batch
        time.sleep(0.3)
    return batch


def content(client: openai.OpenAI, file_id: str | None) -> list[dict]:
    return [json.loads(x) for x in client.files.content(file_id).text.splitlines()] if file_id else []


def test_the_sdk_batch_flow_at_the_batch_price(stack):
    client, tenant_id = tenant_client(stack, "batch")
    lines = [chat_line(i) for i in range(6)]
    f = upload(client, lines)
    assert f.object == "file" and f.purpose == "batch" and f.filename == "input.jsonl"
    assert f.bytes == len(jsonl(lines)) and f.id.startswith("file-") and f.expires_at > f.created_at
    assert client.files.retrieve(f.id).id == f.id
    assert f.id in [x.id for x in client.files.list(purpose="batch")]
    assert client.files.content(f.id).content == jsonl(lines)

    batch = client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h",
                                  metadata={"project": "e2e"})
    assert batch.status in ("validating", "in_progress") and batch.request_counts.total == 6
    assert batch.metadata == {"project": "e2e"} and batch.expires_at - batch.created_at == 24 * 3600
    done = wait(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 6 and done.request_counts.failed == 0
    assert done.in_progress_at and done.finalizing_at and done.completed_at and done.error_file_id is None
    assert batch.id in [b.id for b in client.batches.list()]

    out = content(client, done.output_file_id)
    assert sorted(o["custom_id"] for o in out) == sorted(x["custom_id"] for x in lines)
    for o in out:
        assert o["error"] is None and o["response"]["status_code"] == 200 and o["id"].startswith("batch_req_")
        body = o["response"]["body"]
        assert body["object"] == "chat.completion" and body["model"] == TEST_MODEL
        assert body["choices"][0]["message"]["content"] and body["usage"]["completion_tokens"] == 8
    out_file = client.files.retrieve(done.output_file_id)
    assert out_file.purpose == "batch_output" and out_file.bytes == len(client.files.content(out_file.id).content)

    # Billed at the batch price (prices.yaml: 0.9 and 4 EUR per million tokens), exactly what the output says.
    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
    completion = sum(o["response"]["body"]["usage"]["completion_tokens"] for o in out)
    total = settled(stack, tenant_id, 6)
    assert (int(total["prompt_tokens"]), int(total["completion_tokens"])) == (prompt, completion)
    assert total["cost_eur"] == f"{(prompt * 900 + completion * 4000) / 1e9:.9f}"
    assert (done.usage.input_tokens, done.usage.output_tokens) == (prompt, completion)

    deleted = client.files.delete(f.id)
    assert deleted.deleted is True and deleted.id == f.id
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(f.id)


def settled(stack, tenant_id: str, requests: int) -> dict:
    deadline = time.monotonic() + 20
    while True:
        total = usage(stack, tenant_id)["total"]
        if int(total.get("requests", 0)) >= requests or time.monotonic() > deadline:
            return total
        time.sleep(0.2)


def test_an_embeddings_batch(stack):
    client, tenant_id = tenant_client(stack, "batch-emb")
    lines = [{"custom_id": f"doc-{i}", "method": "POST", "url": "/v1/embeddings",
              "body": {"model": EMBEDDING_MODEL, "input": f"document number {i}"}} for i in range(3)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/embeddings",
                                  completion_window="24h")
    done = wait(client, batch.id)
    assert done.status == "completed" and done.request_counts.completed == 3
    out = content(client, done.output_file_id)
    assert {o["custom_id"] for o in out} == {"doc-0", "doc-1", "doc-2"}
    body = out[0]["response"]["body"]
    assert body["object"] == "list" and len(body["data"][0]["embedding"]) == 384
    prompt = sum(o["response"]["body"]["usage"]["prompt_tokens"] for o in out)
    total = settled(stack, tenant_id, 3)
    assert int(total["prompt_tokens"]) == prompt and total["cost_eur"] == f"{prompt * 900 / 1e9:.9f}"


def test_a_legacy_completions_batch(stack):
    client, _ = tenant_client(stack, "batch-legacy")
    lines = [{"custom_id": f"c-{i}", "method": "POST", "url": "/v1/completions",
              "body": {"model": TEST_MODEL, "prompt": f"Once upon a time {i}", "max_tokens": 5}} for i in range(2)]
    done = wait(client, client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/completions",
                                              completion_window="24h").id)
    assert done.status == "completed" and done.request_counts.completed == 2
    out = content(client, done.output_file_id)
    body = out[0]["response"]["body"]
    assert body["object"] == "text_completion" and body["choices"][0]["text"]
    assert body["usage"]["completion_tokens"] == 5


def test_a_bad_file_is_a_400_naming_its_line(stack):
    client, _ = tenant_client(stack, "batch-bad")
    with pytest.raises(openai.BadRequestError) as e:
        upload(client, [chat_line(0), "{not json", chat_line(2)])
    assert "Line 2" in e.value.message and e.value.code == "invalid_json"
    with pytest.raises(openai.BadRequestError) as e:
        upload(client, [chat_line(0), chat_line(0)])
    assert "Line 2" in e.value.message and e.value.code == "duplicate_custom_id"
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="fine-tune")
    assert e.value.param == "purpose"
    # Valid alone, but not for this endpoint: refused at creation, naming the line.
    f = upload(client, [chat_line(0), {"custom_id": "e", "method": "POST", "url": "/v1/embeddings",
                                       "body": {"model": EMBEDDING_MODEL, "input": "x"}}])
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert "Line 2" in e.value.message and e.value.code == "mismatched_url"
    with pytest.raises(openai.BadRequestError) as e:
        client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="1h")
    assert e.value.param == "completion_window"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-nothere", endpoint="/v1/chat/completions", completion_window="24h")


def test_bad_lines_are_answered_in_the_error_file(stack):
    client, tenant_id = tenant_client(stack, "batch-lines")
    lines = [chat_line(0), chat_line(1, model="no-such-model"), chat_line(2, temperature=7),
             chat_line(3, max_tokens="many"), chat_line(4)]
    done = wait(client, client.batches.create(input_file_id=upload(client, lines).id,
                                              endpoint="/v1/chat/completions", completion_window="24h").id)
    assert done.status == "completed"
    assert (done.request_counts.completed, done.request_counts.failed) == (2, 3)
    assert sorted(o["custom_id"] for o in content(client, done.output_file_id)) == ["req-0", "req-4"]
    errors = {e["custom_id"]: e for e in content(client, done.error_file_id)}
    assert set(errors) == {"req-1", "req-2", "req-3"}
    assert errors["req-1"]["response"]["status_code"] == 404
    assert errors["req-1"]["response"]["body"]["error"]["code"] == "model_not_found"
    for custom_id in ("req-2", "req-3"):
        assert errors[custom_id]["response"]["status_code"] == 400
        assert errors[custom_id]["response"]["body"]["error"]["type"] == "invalid_request_error"
    assert int(settled(stack, tenant_id, 2)["requests"]) == 2  # failed lines cost nothing


def test_cancel_stops_the_batch_and_delivers_what_was_done(stack):
    client, _ = tenant_client(stack, "batch-cancel")
    lines = [chat_line(i, model=SLOW_MODEL, max_tokens=10) for i in range(40)]
    batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/chat/completions",
                                  completion_window="24h")
    wait(client, batch.id, statuses=("in_progress",) + FINAL)
    time.sleep(1.0)
    cancelling = client.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at
    done = wait(client, batch.id, timeout=60)
    assert done.status == "cancelled" and done.cancelled_at
    out = content(client, done.output_file_id)
    never = [e for e in content(client, done.error_file_id) if e["response"] is None]
    assert 0 < len(out) < 40 and len(out) + len(never) == 40
    assert all(e["error"]["code"] == "batch_cancelled" for e in never)
    with pytest.raises(openai.BadRequestError):
        client.batches.cancel(batch.id)  # already over


def test_another_tenants_files_and_batches_are_not_found(stack):
    owner, _ = tenant_client(stack, "batch-owner")
    other, _ = tenant_client(stack, "batch-other")
    f = upload(owner, [chat_line(0)])
    batch = owner.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions", completion_window="24h")
    for call in (lambda: other.files.retrieve(f.id), lambda: other.files.content(f.id),
                 lambda: other.files.delete(f.id), lambda: other.batches.retrieve(batch.id),
                 lambda: other.batches.cancel(batch.id),
                 lambda: other.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                              completion_window="24h")):
        with pytest.raises(openai.NotFoundError):
            call()
    assert f.id not in [x.id for x in other.files.list()]
    assert batch.id not in [b.id for b in other.batches.list()]
    assert wait(owner, batch.id).status == "completed"  # untouched


def test_files_are_encrypted_at_rest_and_deleted_for_real(stack):
    client, _ = tenant_client(stack, "batch-crypt")
    canary = "canary" + secrets.token_hex(8)
    f = upload(client, [chat_line(0, content=f"Repeat {canary} please"), chat_line(1, content=canary)])
    done = wait(client, client.batches.create(input_file_id=f.id, endpoint="/v1/chat/completions",
                                              completion_window="24h").id)
    assert done.status == "completed"
    assert canary.encode() in client.files.content(f.id).content  # the API gives it back decrypted
    data_dir = Path(stack["data_dir"])
    blobs = list((data_dir / "files").glob("*.bin"))
    assert (data_dir / "files" / f"{f.id}.bin") in blobs
    key_file = data_dir / "files.key"
    assert key_file.stat().st_mode & 0o777 == 0o600
    for path in [*blobs, *data_dir.glob("router.db*")]:
        assert canary.encode() not in path.read_bytes(), path
    client.files.delete(f.id)
    assert not (data_dir / "files" / f"{f.id}.bin").exists()


def test_a_files_expiry_is_honoured_within_the_retention(stack):
    client, _ = tenant_client(stack, "batch-expiry")
    f = client.files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 3600})
    assert f.expires_at == f.created_at + 3600
    assert client.files.retrieve(f.id).expires_at == f.created_at + 3600
    default = upload(client, [chat_line(0)])
    assert default.expires_at == default.created_at + 7 * 24 * 3600  # the reference's retention
    with pytest.raises(openai.BadRequestError) as e:
        client.files.create(file=("x.jsonl", io.BytesIO(jsonl([chat_line(0)]))), purpose="batch",
                            expires_after={"anchor": "created_at", "seconds": 30 * 24 * 3600})
    assert e.value.param == "expires_after"


def test_a_batch_file_larger_than_any_json_body_uploads_and_reads_back_whole(stack):
    """The reference takes batch files of up to 100 MB: well past the edge's 16 MiB JSON body limit."""
    from llmaas.stack.envoy import MAX_BODY_BYTES

    client, _ = tenant_client(stack, "batch-big")
    filler = "lorem ipsum " * 3000  # about 36 KB a line
    lines = [chat_line(i, content=f"{i} {filler}") for i in range(MAX_BODY_BYTES // 36_000 + 50)]
    data = jsonl(lines)
    assert len(data) > MAX_BODY_BYTES + 1024 * 1024
    f = client.files.create(file=("big.jsonl", io.BytesIO(data)), purpose="batch")
    assert f.bytes == len(data) and f.status == "processed"
    assert client.files.content(f.id).content == data  # streamed back in chunks, past the transcoder's buffer


def test_an_upload_past_the_upload_limit_is_a_413_before_any_service(stack):
    import httpx
    from llmaas.stack.envoy import MAX_UPLOAD_BYTES

    _, key = new_key(stack, new_tenant(stack, "batch-huge"))
    body = b"x" * (MAX_UPLOAD_BYTES + 1)
    resp = httpx.post(stack["base_url"] + "/files", headers={"Authorization": f"Bearer {key}"},
                      files={"file": ("huge.jsonl", body)}, data={"purpose": "batch"}, timeout=120)
    assert resp.status_code == 413, resp.text
    err = resp.json()["error"]
    assert err["code"] == "request_too_large" and err["param"] == "file" and str(MAX_UPLOAD_BYTES) in err["message"]


def test_an_upload_is_not_read_before_its_key_is_checked(stack):
    """The edge answers a bad key on the headers: it does not wait for (and hold) a 100 MiB body first."""
    import socket
    import ssl
    from urllib.parse import urlsplit

    url = urlsplit(stack["base_url"])
    context = ssl.create_default_context(cafile=stack["ca_file"])
    with socket.create_connection((url.hostname, url.port), timeout=10) as raw, \
            context.wrap_socket(raw, server_hostname=url.hostname) as conn:
        conn.sendall(b"POST /v1/files HTTP/1.1\r\nHost: " + url.netloc.encode() + b"\r\nAuthorization: Bearer sk-bad\r\n"
                     b"Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100000000\r\n\r\n" + b"x" * 1024)
        answer = conn.recv(4096)  # the other 99.99 MB are never sent: this would time out if the edge waited for them
    assert answer.startswith(b"HTTP/1.1 401"), answer[:200]
