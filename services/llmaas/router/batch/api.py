"""The Files and Batch REST operations (OpenAI's objects, written as JSON by the router; Envoy passes them through).

Every operation is the calling key's tenant's: another tenant's file or batch id is a 404, as an unknown one is. Each
call gets an audit record like any request. Files are validated at upload (a batch input: every line, a 400 naming
the first bad one) and again when a batch is created from them (the batch's endpoint).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
from google.api import httpbody_pb2

from llmaas.common.errors import ApiError, invalid_request
from llmaas.common.json_fields import unrecognized
from llmaas.router.audio_upload import form_parts
from llmaas.router.batch import lines as bl
from llmaas.router.batch.crypto import DecryptionError
from llmaas.router.batch.files import FileVault
from llmaas.router.batch.store import ACTIVE, FINAL, Store, identity_json
from llmaas.router.batch.worker import BatchWorker
from llmaas.router.pipeline import ChatPipeline, Usage

PURPOSES = ("batch",)
# The reference's "Concurrent batches per account".
MAX_ACTIVE_BATCHES = 10
# Uploads parsed and encrypted at once: each holds several copies of up to 100 MB (the parts, the parsed lines, the
# ciphertext); the next waits its turn, and past MAX_PENDING_UPLOADS in the router (each holding its body) a 429.
MAX_CONCURRENT_UPLOADS = 2
MAX_PENDING_UPLOADS = 4
MAX_METADATA_PAIRS, MAX_METADATA_KEY, MAX_METADATA_VALUE = 16, 64, 512
CONTENT_CHUNK = 1 << 20
# OpenAI's bounds for a file's expires_after.seconds (one hour to 30 days); ours also stop at the retention.
MIN_EXPIRES_AFTER = 3600


def _json(obj) -> httpbody_pb2.HttpBody:
    return httpbody_pb2.HttpBody(content_type="application/json",
                                 data=json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode())


def not_found(kind: str, object_id: str, param: str) -> ApiError:
    return ApiError(grpc.StatusCode.NOT_FOUND, f"No such {kind} object: {object_id[:80]}", param=param,
                    code="not_found")


def file_object(row: dict) -> dict:
    return {"id": row["id"], "object": "file", "bytes": row["bytes"], "created_at": row["created_at"],
            "expires_at": row["expires_at"], "filename": row["filename"], "purpose": row["purpose"],
            "status": "processed", "status_details": None}


def batch_object(row: dict) -> dict:
    prompt, completion = row["prompt_tokens"], row["completion_tokens"]
    return {
        "id": row["id"], "object": "batch", "endpoint": row["endpoint"], "model": None,
        "errors": json.loads(row["errors"]) if row["errors"] else None,
        "input_file_id": row["input_file_id"], "completion_window": row["completion_window"],
        "status": row["status"], "output_file_id": row["output_file_id"], "error_file_id": row["error_file_id"],
        "created_at": row["created_at"], "in_progress_at": row["in_progress_at"], "expires_at": row["expires_at"],
        "finalizing_at": row["finalizing_at"], "completed_at": row["completed_at"], "failed_at": row["failed_at"],
        "expired_at": row["expired_at"], "cancelling_at": row["cancelling_at"], "cancelled_at": row["cancelled_at"],
        "request_counts": {"total": row["total"], "completed": row["completed"], "failed": row["failed"]},
        "usage": {"input_tokens": prompt, "input_tokens_details": {"cached_tokens": 0},
                  "output_tokens": completion, "output_tokens_details": {"reasoning_tokens": 0},
                  "total_tokens": prompt + completion},
        "metadata": json.loads(row["metadata"]) if row["metadata"] else None,
    }


class BatchApi:
    def __init__(self, pipeline: ChatPipeline, store: Store, vault: FileVault, worker: BatchWorker | None) -> None:
        self._pipeline, self._store, self._vault, self._worker = pipeline, store, vault, worker
        self._upload_pool = ThreadPoolExecutor(MAX_CONCURRENT_UPLOADS, thread_name_prefix="upload")
        self._uploads_in_flight = 0

    async def call(self, context, endpoint: str, handler):
        """Runs `handler(caller)` for the authenticated caller, with its audit record."""
        caller = await self._pipeline.caller(context, endpoint)
        try:
            result = await handler(caller)
        except ApiError as err:
            self._pipeline.record(caller, "", Usage(), err)
            raise
        self._pipeline.record(caller, "", Usage(), None)
        return result

    # Files.
    async def create_file(self, caller, request: httpbody_pb2.HttpBody) -> httpbody_pb2.HttpBody:
        if self._uploads_in_flight >= MAX_PENDING_UPLOADS:
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many file uploads are in progress: retry in a "
                           "few seconds.", code="too_many_uploads", headers=(("retry-after", "5"),))
        self._uploads_in_flight += 1
        try:
            # The whole upload in the uploads' own threads: at most MAX_CONCURRENT_UPLOADS at once, never in the
            # default executor the chat path uses, and bounded even when a client leaves mid-way (the work it started
            # finishes in its thread, holding its slot).
            row = await asyncio.get_running_loop().run_in_executor(
                self._upload_pool, self._store_upload, caller.identity.tenant_id, request.content_type, request.data)
        finally:
            self._uploads_in_flight -= 1
        return _json(file_object(row))

    def _store_upload(self, tenant_id: str, content_type: str, body: bytes) -> dict:
        parts = form_parts(content_type, body)
        fields = {name: value for name, filename, value in parts if name != "file"}
        uploads = [(filename, value) for name, filename, value in parts if name == "file"]
        if len(uploads) != 1:
            raise invalid_request("One 'file' part is required.", param="file", code="missing_required_parameter")
        filename, data = uploads[0]
        purpose = fields.get("purpose", b"").decode("utf-8", "replace").strip()
        if not purpose:
            raise invalid_request("'purpose' is required.", param="purpose", code="missing_required_parameter")
        if purpose not in PURPOSES:
            raise invalid_request(f"Invalid 'purpose': '{purpose[:32]}'. Supported values are: "
                                  f"{', '.join(PURPOSES)}.", param="purpose", code="invalid_value")
        expires_after = self._expires_after(fields)
        unknown = set(fields) - {"purpose", "expires_after[anchor]", "expires_after[seconds]"}
        if unknown:
            raise unrecognized(sorted(unknown)[0])
        count = bl.count_batch_lines(data)
        return self._vault.create(tenant_id, purpose, filename or "upload.jsonl", data, count, expires_after)

    def _expires_after(self, fields: dict[str, bytes]) -> int | None:
        anchor = fields.get("expires_after[anchor]")
        seconds = fields.get("expires_after[seconds]")
        if anchor is None and seconds is None:
            return None
        if anchor is None or anchor.decode("utf-8", "replace") != "created_at":
            raise invalid_request("'expires_after[anchor]' must be 'created_at'.", param="expires_after",
                                  code="invalid_value")
        retention = self._vault.retention_seconds
        try:
            value = int(seconds or b"")
        except ValueError:
            value = -1
        if not MIN_EXPIRES_AFTER <= value <= retention:
            raise invalid_request(f"'expires_after[seconds]' must be an integer from {MIN_EXPIRES_AFTER} to "
                                  f"{retention} (the retention period).", param="expires_after", code="invalid_value")
        return value

    async def list_files(self, caller, request) -> httpbody_pb2.HttpBody:
        limit = request.limit or 10000
        if not 1 <= limit <= 10000:
            raise invalid_request("'limit' must be from 1 to 10000.", param="limit", code="invalid_value")
        order = request.order or "desc"
        if order not in ("asc", "desc"):
            raise invalid_request("'order' must be 'asc' or 'desc'.", param="order", code="invalid_value")
        rows = await asyncio.to_thread(self._store.list_files, caller.identity.tenant_id, request.purpose, limit + 1,
                                       request.after, order == "asc")
        return _json(_page([file_object(r) for r in rows[:limit]], len(rows) > limit, empty_ids=""))

    async def _file(self, caller, file_id: str) -> dict:
        row = await asyncio.to_thread(self._store.get_file, caller.identity.tenant_id, file_id)
        if row is None:
            raise not_found("File", file_id, "file_id")
        return row

    async def retrieve_file(self, caller, request) -> httpbody_pb2.HttpBody:
        return _json(file_object(await self._file(caller, request.file_id)))

    async def file_content(self, caller, request) -> list[httpbody_pb2.HttpBody]:
        row = await self._file(caller, request.file_id)
        try:
            data = await asyncio.to_thread(self._vault.read, caller.identity.tenant_id, row["id"])
        except (FileNotFoundError, DecryptionError):
            raise not_found("File", request.file_id, "file_id") from None
        chunks = [data[i:i + CONTENT_CHUNK] for i in range(0, len(data), CONTENT_CHUNK)] or [b""]
        return [httpbody_pb2.HttpBody(content_type="application/octet-stream" if i == 0 else "", data=c)
                for i, c in enumerate(chunks)]

    async def delete_file(self, caller, request) -> httpbody_pb2.HttpBody:
        row = await self._file(caller, request.file_id)
        if not await asyncio.to_thread(self._vault.delete, caller.identity.tenant_id, row["id"]):
            raise not_found("File", request.file_id, "file_id")
        return _json({"id": row["id"], "object": "file", "deleted": True})

    # Batches.
    async def create_batch(self, caller, request: httpbody_pb2.HttpBody) -> httpbody_pb2.HttpBody:
        try:
            body = json.loads(request.data or b"null")
        except ValueError:
            raise invalid_request("The body is not valid JSON.", code="invalid_json") from None
        if not isinstance(body, dict):
            raise invalid_request("The body must be a JSON object.", code="invalid_json")
        unknown = set(body) - {"input_file_id", "endpoint", "completion_window", "metadata"}
        if unknown:
            raise unrecognized(sorted(unknown)[0])
        for name in ("input_file_id", "endpoint", "completion_window"):
            if not isinstance(body.get(name), str) or not body[name]:
                raise invalid_request(f"'{name}' is required (a string).", param=name,
                                      code="missing_required_parameter")
        endpoint, window = body["endpoint"], body["completion_window"]
        if endpoint not in bl.ENDPOINTS:
            raise invalid_request(f"Invalid 'endpoint': '{endpoint[:64]}'. Supported values are: "
                                  f"{', '.join(bl.ENDPOINTS)}.", param="endpoint", code="invalid_value")
        if window not in bl.COMPLETION_WINDOWS:
            raise invalid_request(f"Invalid 'completion_window': '{window[:16]}'. Supported values are: "
                                  f"{', '.join(bl.COMPLETION_WINDOWS)}.", param="completion_window",
                                  code="invalid_value")
        metadata = _metadata(body.get("metadata"))
        tenant_id = caller.identity.tenant_id
        row = await self._file(caller, body["input_file_id"])
        if row["purpose"] != "batch":
            raise invalid_request(f"The file {row['id']} has purpose '{row['purpose']}': a batch's input must have "
                                  "purpose 'batch'.", param="input_file_id", code="invalid_value")
        try:
            data = await asyncio.to_thread(self._vault.read, tenant_id, row["id"])
        except (FileNotFoundError, DecryptionError):
            raise not_found("File", row["id"], "input_file_id") from None
        count = await asyncio.to_thread(bl.count_batch_lines, data, endpoint)
        if await asyncio.to_thread(self._store.active_batches, tenant_id) >= MAX_ACTIVE_BATCHES:
            raise ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"At most {MAX_ACTIVE_BATCHES} batches may run at "
                           "once per account: wait for one to end.", code="too_many_active_batches")
        now = int(time.time())
        batch = {"id": "batch_" + secrets.token_hex(12), "tenant_id": tenant_id, "key_id": caller.identity.key_id,
                 "identity": identity_json(caller.identity), "client_address": caller.client_address,
                 "endpoint": endpoint, "input_file_id": row["id"], "completion_window": window,
                 "status": "validating", "metadata": json.dumps(metadata) if metadata is not None else None,
                 "created_at": now, "expires_at": now + bl.COMPLETION_WINDOWS[window], "total": count}
        await asyncio.to_thread(self._store.add_batch, batch, count)
        if self._worker is not None:
            self._worker.notify(batch["id"])
        return _json(batch_object(await asyncio.to_thread(self._store.get_batch, batch["id"])))

    async def _batch(self, caller, batch_id: str) -> dict:
        row = await asyncio.to_thread(self._store.get_batch, batch_id, caller.identity.tenant_id)
        if row is None:
            raise not_found("Batch", batch_id, "batch_id")
        return row

    async def retrieve_batch(self, caller, request) -> httpbody_pb2.HttpBody:
        return _json(batch_object(await self._batch(caller, request.batch_id)))

    async def list_batches(self, caller, request) -> httpbody_pb2.HttpBody:
        limit = request.limit or 20
        if not 1 <= limit <= 100:
            raise invalid_request("'limit' must be from 1 to 100.", param="limit", code="invalid_value")
        rows = await asyncio.to_thread(self._store.list_batches, caller.identity.tenant_id, limit + 1, request.after)
        return _json(_page([batch_object(r) for r in rows[:limit]], len(rows) > limit))

    async def cancel_batch(self, caller, request) -> httpbody_pb2.HttpBody:
        row = await self._batch(caller, request.batch_id)
        if row["status"] in FINAL:
            raise ApiError(grpc.StatusCode.FAILED_PRECONDITION, f"Cannot cancel a batch with status "
                           f"'{row['status']}'.", param="batch_id", code="invalid_batch_status")
        row = await asyncio.to_thread(self._store.request_cancel, caller.identity.tenant_id, row["id"],
                                      int(time.time()))
        if row["status"] in ACTIVE and self._worker is not None:
            self._worker.notify(row["id"], cancel=True)
        return _json(batch_object(row))


def _page(data: list[dict], has_more: bool, *, empty_ids: str | None = None) -> dict:
    """OpenAI's cursor list. Its description types first_id/last_id as strings: an empty page leaves them out, or
    (files, where they are required) gives `empty_ids`."""
    page = {"object": "list", "data": data, "has_more": has_more}
    if data:
        page |= {"first_id": data[0]["id"], "last_id": data[-1]["id"]}
    elif empty_ids is not None:
        page |= {"first_id": empty_ids, "last_id": empty_ids}
    return page


def _metadata(value) -> dict | None:
    if value is None:
        return None
    if not isinstance(value, dict) or len(value) > MAX_METADATA_PAIRS or not all(
            isinstance(k, str) and len(k) <= MAX_METADATA_KEY and isinstance(v, str) and len(v) <= MAX_METADATA_VALUE
            for k, v in value.items()):
        raise invalid_request(f"'metadata' must be an object of at most {MAX_METADATA_PAIRS} string values (keys up "
                              f"to {MAX_METADATA_KEY} characters, values up to {MAX_METADATA_VALUE}).",
                              param="metadata", code="invalid_value")
    return value
