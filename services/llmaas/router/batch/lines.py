"""A batch's input file (JSONL, one request per line) and its output lines, in OpenAI's formats.

Validated at upload (purpose=batch) and again at batch creation, so that a bad file is a 400 naming its line before
anything runs: every line a JSON object with a unique `custom_id`, `method` POST, a supported `url` and a `body`
object with a `model`; at most MAX_REQUESTS lines and MAX_FILE_BYTES bytes (the reference's limits). A body's other
fields are checked when its line runs, exactly as the interactive endpoint checks them: a bad one is that line's error.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from dataclasses import dataclass

from llmaas.common.errors import invalid_request

# The reference's limits (cloud-temple-llmaas/batch.md "Limitations and Constraints").
MAX_FILE_BYTES = 100 * 1024 * 1024
# A whole upload at the edge: a file of MAX_FILE_BYTES and its multipart envelope (boundaries, the purpose field).
MAX_UPLOAD_BYTES = MAX_FILE_BYTES + 1024 * 1024
MAX_REQUESTS = 50_000
MAX_CUSTOM_ID = 512
ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
COMPLETION_WINDOWS = {"24h": 24 * 3600}


@dataclass(frozen=True)
class BatchLine:
    index: int  # 0-based; messages name lines from 1, as editors do
    custom_id: str
    url: str
    body: dict


def parse_batch_file(data: bytes, endpoint: str | None = None) -> list[BatchLine]:
    """Every line of a batch input, or a 400 naming the first bad one. `endpoint`: the batch's, which every line's
    `url` must equal (OpenAI's rule)."""
    return list(_iter_batch_lines(data, endpoint))


def count_batch_lines(data: bytes, endpoint: str | None = None) -> int:
    """Validates a batch input as parse_batch_file does, keeping nothing: a 100 MB upload is checked without holding
    its parsed lines (several times its size) in memory."""
    return sum(1 for _ in _iter_batch_lines(data, endpoint))


def _iter_batch_lines(data: bytes, endpoint: str | None) -> Iterator[BatchLine]:
    if len(data) > MAX_FILE_BYTES:
        raise invalid_request(f"The file is too large: at most {MAX_FILE_BYTES // (1024 * 1024)} MB.", param="file",
                              code="file_too_large")
    seen: set[str] = set()
    count = 0
    # JSONL lines end at "\n" alone: a JSON string may hold U+2028 or a form feed, which str.splitlines would cut at.
    # One line's copy at a time, never the whole file decoded.
    for number, raw in enumerate(io.BytesIO(data), start=1):
        if not raw.strip():
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise invalid_request(f"Line {number}: not UTF-8 text (JSONL expected).", param=f"line {number}",
                                  code="invalid_file_format") from None
        if count >= MAX_REQUESTS:
            raise invalid_request(f"The file has more than {MAX_REQUESTS} requests (line {number}).", param="file",
                                  code="too_many_requests")
        line = _parse_line(text, number, count, endpoint)
        if line.custom_id in seen:
            raise _bad(number, "'custom_id' must be unique within the file: this one appears earlier.",
                       "duplicate_custom_id")
        seen.add(line.custom_id)
        count += 1
        yield line
    if not count:
        raise invalid_request("The file has no requests: one JSON object per line expected.", param="file",
                              code="empty_file")


def _bad(number: int, message: str, code: str = "invalid_batch_line"):
    return invalid_request(f"Line {number}: {message}", param=f"line {number}", code=code)


def _parse_line(raw: str, number: int, index: int, endpoint: str | None) -> BatchLine:
    try:
        obj = json.loads(raw)
    except ValueError:
        raise _bad(number, "not valid JSON.", "invalid_json") from None
    if not isinstance(obj, dict):
        raise _bad(number, "must be a JSON object with custom_id, method, url and body.")
    custom_id = obj.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        raise _bad(number, "'custom_id' is required (a non-empty string).", "missing_required_parameter")
    if len(custom_id) > MAX_CUSTOM_ID:
        raise _bad(number, f"'custom_id' is too long: at most {MAX_CUSTOM_ID} characters.")
    if obj.get("method") != "POST":
        raise _bad(number, "'method' must be \"POST\".")
    url = obj.get("url")
    if url not in ENDPOINTS:
        raise _bad(number, f"'url' must be one of {', '.join(ENDPOINTS)}.", "unsupported_url")
    if endpoint is not None and url != endpoint:
        raise _bad(number, f"'url' is {url} but the batch's endpoint is {endpoint}: every line must use it.",
                   "mismatched_url")
    body = obj.get("body")
    if not isinstance(body, dict):
        raise _bad(number, "'body' is required (a JSON object: the request as sent to the endpoint).",
                   "missing_required_parameter")
    if not isinstance(body.get("model"), str) or not body["model"]:
        raise _bad(number, "'body.model' is required (a string).", "missing_required_parameter")
    if body.get("stream"):
        raise _bad(number, "'body.stream' is not supported in a batch: results are written to the output file.",
                   "unsupported_parameter")
    unknown = set(obj) - {"custom_id", "method", "url", "body"}
    if unknown:
        raise _bad(number, f"unknown field '{sorted(unknown)[0]}'.")
    return BatchLine(index, custom_id, url, body)


def output_line(batch_id: str, line: BatchLine, request_id: str, status_code: int, body: dict) -> dict:
    """OpenAI's batch output line: the response (status and body, success or an error body) of one request."""
    return {"id": f"batch_req_{request_id_suffix(request_id)}", "custom_id": line.custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": None}


def failed_line(line: BatchLine, code: str, message: str) -> dict:
    """A line that got no response at all (the batch expired or was cancelled before it ran)."""
    return {"id": f"batch_req_{line.index}", "custom_id": line.custom_id, "response": None,
            "error": {"code": code, "message": message}}


def request_id_suffix(request_id: str) -> str:
    return request_id.replace(":", "_")


def line_request_id(batch_id: str, index: int, attempt: int) -> str:
    """The line's request id (metering's idempotency key, the audit trail's id): one per attempt."""
    return f"{batch_id}:{index}:{attempt}"
