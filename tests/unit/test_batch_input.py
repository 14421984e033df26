"""A batch's input file (llmaas.router.batch.lines) and the files' encryption (llmaas.router.batch.crypto)."""

from __future__ import annotations

import json
import os
import stat

import pytest
from llmaas.common.errors import ApiError
from llmaas.router.batch import lines as bl
from llmaas.router.batch.crypto import DecryptionError, KeyRing, load_master_key


def jsonl(*objs) -> bytes:
    return b"".join((o if isinstance(o, str) else json.dumps(o)).encode() + b"\n" for o in objs)


def chat(custom_id: str, **body) -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions",
            "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}], **body}}


def test_a_valid_file_parses_in_order_skipping_blank_lines():
    lines = bl.parse_batch_file(jsonl(chat("a"), "", chat("b"),
                                      {"custom_id": "c", "method": "POST", "url": "/v1/embeddings",
                                       "body": {"model": "e", "input": "x"}}))
    assert [(line.index, line.custom_id, line.url) for line in lines] == [
        (0, "a", "/v1/chat/completions"), (1, "b", "/v1/chat/completions"), (2, "c", "/v1/embeddings")]


@pytest.mark.parametrize(("line", "code", "says"), [
    ("{not json", "invalid_json", "not valid JSON"),
    ("[1, 2]", "invalid_batch_line", "JSON object"),
    ({"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}, "missing_required_parameter",
     "custom_id"),
    ({**chat("x"), "method": "GET"}, "invalid_batch_line", "method"),
    ({**chat("x"), "url": "/v1/images"}, "unsupported_url", "url"),
    ({**chat("x"), "body": "text"}, "missing_required_parameter", "body"),
    ({**chat("x"), "body": {"messages": []}}, "missing_required_parameter", "body.model"),
    (chat("x", stream=True), "unsupported_parameter", "stream"),
    ({**chat("x"), "extra": 1}, "invalid_batch_line", "extra"),
])
def test_a_bad_line_is_a_400_naming_it(line, code, says):
    with pytest.raises(ApiError) as e:
        bl.parse_batch_file(jsonl(chat("ok"), "", line))
    assert e.value.code == code
    assert e.value.message.startswith("Line 3:")
    assert says in e.value.message
    assert e.value.param == "line 3"


def test_custom_ids_are_unique():
    with pytest.raises(ApiError) as e:
        bl.parse_batch_file(jsonl(chat("a"), chat("b"), chat("a")))
    assert e.value.code == "duplicate_custom_id" and "Line 3" in e.value.message


def test_every_line_must_use_the_batchs_endpoint():
    data = jsonl(chat("a"), {"custom_id": "b", "method": "POST", "url": "/v1/embeddings",
                             "body": {"model": "e", "input": "x"}})
    bl.parse_batch_file(data)  # fine as an upload
    with pytest.raises(ApiError) as e:
        bl.parse_batch_file(data, "/v1/chat/completions")
    assert e.value.code == "mismatched_url" and "Line 2" in e.value.message


def test_limits(monkeypatch):
    monkeypatch.setattr(bl, "MAX_REQUESTS", 3)
    with pytest.raises(ApiError) as e:
        bl.parse_batch_file(jsonl(*(chat(str(i)) for i in range(4))))
    assert e.value.code == "too_many_requests" and "line 4" in e.value.message
    monkeypatch.setattr(bl, "MAX_FILE_BYTES", 10)
    with pytest.raises(ApiError) as e:
        bl.parse_batch_file(jsonl(chat("a")))
    assert e.value.code == "file_too_large"
    for data, code in ((b"", "empty_file"), (b"\xff\xfe", "invalid_file_format")):
        with pytest.raises(ApiError) as e:
            bl.parse_batch_file(data)
        assert e.value.code == code


def test_master_key_is_made_once_private_and_kept(tmp_path):
    path = tmp_path / "keys" / "files.key"
    key = load_master_key(path)
    assert len(key) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_master_key(path) == key
    path.write_bytes(b"short")
    with pytest.raises(ValueError):
        load_master_key(path)


def test_blobs_decrypt_only_with_their_tenant_id_and_key():
    ring = KeyRing(b"k" * 32)
    canary = b"canary-7f3a9 the secret prompt"
    blob = ring.encrypt("tenant-a", "file-1", canary)
    assert canary not in blob and b"canary" not in blob
    assert ring.encrypt("tenant-a", "file-1", canary) != blob  # a fresh nonce each time
    assert ring.decrypt("tenant-a", "file-1", blob) == canary
    for tenant, object_id, other in (("tenant-b", "file-1", ring), ("tenant-a", "file-2", ring),
                                     ("tenant-a", "file-1", KeyRing(b"j" * 32))):
        with pytest.raises(DecryptionError):
            other.decrypt(tenant, object_id, blob)
    tampered = bytearray(blob)
    tampered[-1] ^= 1
    with pytest.raises(DecryptionError):
        ring.decrypt("tenant-a", "file-1", bytes(tampered))


def test_lines_end_at_newline_only_and_counting_validates_the_same():
    # U+2028 is legal, unescaped, inside a JSON string: str.splitlines would have cut the line there.
    data = jsonl(chat("a", messages=[{"role": "user", "content": "one\u2028two"}]), chat("b")).replace(
        b"\\u2028", "\u2028".encode())
    assert "\u2028".encode() in data
    lines = bl.parse_batch_file(data)
    assert [line.custom_id for line in lines] == ["a", "b"] and bl.count_batch_lines(data) == 2
    assert lines[0].body["messages"][0]["content"] == "one\u2028two"
    with pytest.raises(ApiError) as e:
        bl.count_batch_lines(jsonl(chat("a"), chat("a")))
    assert e.value.code == "duplicate_custom_id"
    with pytest.raises(ApiError) as e:
        bl.count_batch_lines(jsonl(chat("a")) + b"\xff\n")
    assert e.value.code == "invalid_file_format" and e.value.param == "line 2"
