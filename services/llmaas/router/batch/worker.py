"""The batch worker: runs the active batches' lines through the router's own pipeline, durably.

Durability (state in the database, llmaas.router.batch.store): a line is marked `running` under a new attempt before
it is dispatched; its request id is <batch>:<line>:<attempt> (metering's idempotency key). Its result is committed
(encrypted) before its usage is settled. A worker killed at any point resumes from there: a line left `running` had
its attempt released (settled `cancelled` with nothing used: no charge, whether or not metering saw it) and runs again
under the next attempt; a `done` line's settlement is sent again (idempotent: metering counts it once). So no line
is lost and none is billed twice, and what is billed is what the output file says.

Fairness: at most `concurrency` lines at once while the router has no interactive traffic; while it has (a chat
request arrived within QUIET_SECONDS, or requests other than the batch's are at the model replicas), at most
`yield_to` (default 0: new lines wait), with one line at a time every MIN_PROGRESS_SECONDS at least, so that a batch
under constant interactive load still progresses. The batch takes the capacity interactive traffic leaves. A worker holds up to `max_batches` batches at
once, another tenant's before a second one of the same tenant, and the batches being dispatched share the
concurrency evenly: one tenant's 50,000 lines do not hold up another's ten. A rate-limited or unavailable line goes back
to the queue and the batch pauses for the Retry-After, until the batch's window ends: then it expires honestly (what
was done is delivered, the rest is reported `batch_expired`). Cancel stops dispatching at once (the API tells the
worker directly; another router's cancel is seen within POLL_SECONDS) and finalizes what was done.

Permissions: each line runs with its key as auth has it now (checked at most every KEY_CHECK_SECONDS per key): a key
revoked or expired since the batch was created runs no more lines (each is answered 401 `invalid_api_key` in the
error file, nothing billed), and a change of its models or quotas applies to the lines still to run.

Ownership: a batch is leased to one worker (LEASE_SECONDS, renewed); the worker id is stable for a router address,
so a router restarted after a kill takes its batches back at once; another router takes them once the lease lapses.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time

import grpc
from google.protobuf import json_format
from opentelemetry import trace

from llmaas.common.errors import ApiError, internal_error, invalid_request
from llmaas.common.identity import Identity
from llmaas.common.json_fields import refuse_unknown_fields
from llmaas.router import completions
from llmaas.router import openai_json as oj
from llmaas.router.batch import lines as bl
from llmaas.router.batch.crypto import DecryptionError
from llmaas.router.batch.files import FileVault, new_file_id
from llmaas.router.batch.store import Store, identity_from_json
from llmaas.router.embeddings import EmbeddingService
from llmaas.router.embeddings import json_body as embedding_json
from llmaas.router.pipeline import ChatPipeline, Usage
from llmaas.router.v1 import router_pb2

log = logging.getLogger("llmaas.router.batch")
tracer = trace.get_tracer("llmaas.router.batch")

LEASE_SECONDS = 15.0
POLL_SECONDS = 0.5
SWEEP_SECONDS = 300.0
MAX_PAUSE_SECONDS = 30.0
# Interactive traffic this recent makes the batch yield; a yielding batch still starts a line this often.
QUIET_SECONDS = 0.5
MIN_PROGRESS_SECONDS = 1.0
# How old the batch key's permissions may be when a line starts (auth's own cache bound for a revoked key).
KEY_CHECK_SECONDS = 2.0
# Results are read back this many lines at a time when the output files are written.
FINALIZE_CHUNK = 1000
# Transient refusals: the line waits and runs again (a quota window, metering or a model restarting).
_RETRY_LATER = frozenset({grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE,
                          grpc.StatusCode.DEADLINE_EXCEEDED})


class LeaseLost(Exception):
    pass


class BatchWorker:
    def __init__(self, store: Store, vault: FileVault, pipeline: ChatPipeline, embeddings: EmbeddingService, *,
                 owner: str, concurrency: int = 4, yield_to: int = 0, lease_seconds: float = LEASE_SECONDS,
                 poll_seconds: float = POLL_SECONDS, max_batches: int = 4) -> None:
        self._store, self._vault, self._pipeline, self._embeddings = store, vault, pipeline, embeddings
        self._owner, self._concurrency, self._yield_to = owner, max(1, concurrency), max(0, min(yield_to, concurrency))
        self._lease, self._poll = lease_seconds, poll_seconds
        self._cancelled: set[str] = set()
        self._wakeup = asyncio.Event()
        self._generating = 0  # this worker's generations at the replicas (the rest of the pool's load is interactive)
        self._pause_until: dict[str, float] = {}  # a batch waiting for a Retry-After (its tenant's limits)
        self._last_start = 0.0
        self._max_batches = max(1, max_batches)
        self._lines_running = 0  # lines in flight across the batches held
        self._dispatching = 0  # batches dispatching lines now (they share the concurrency)
        # (tenant, key) -> (until when, the key's identity now or None: revoked or expired).
        self._keys: dict[tuple[str, str], tuple[float, Identity | None]] = {}

    def notify(self, batch_id: str | None = None, *, cancel: bool = False) -> None:
        """A batch was created (wake up) or cancelled (stop dispatching it now)."""
        if cancel and batch_id:
            self._cancelled.add(batch_id)
        self._wakeup.set()

    async def run(self) -> None:
        sweeper = asyncio.create_task(self._sweep())
        try:
            await self._work()
        finally:
            sweeper.cancel()

    async def _sweep(self) -> None:
        """Deletes the files past their retention (every SWEEP_SECONDS, whatever batch is running)."""
        while True:
            try:
                swept = await asyncio.to_thread(self._vault.sweep)
                if swept:
                    log.info("files deleted after retention", extra={"fields": {"files": swept}})
            except Exception:  # noqa: BLE001 - tried again at the next sweep
                log.exception("file retention sweep failed")
            await asyncio.sleep(SWEEP_SECONDS)

    async def _work(self) -> None:
        """Holds up to `max_batches` batches at once (each its own task), their lines sharing the concurrency."""
        held: dict[str, asyncio.Task] = {}
        tenants: dict[str, str] = {}
        try:
            while True:
                try:
                    batch = None
                    if len(held) < self._max_batches:
                        batch = await asyncio.to_thread(
                            self._store.claim, self._owner, self._lease, exclude=frozenset(held),
                            busy_tenants=frozenset(tenants.values()))
                    if batch is None:
                        self._wakeup.clear()
                        wake = asyncio.ensure_future(self._wakeup.wait())
                        try:
                            await asyncio.wait({wake, *held.values()}, timeout=self._poll,
                                               return_when=asyncio.FIRST_COMPLETED)
                        finally:
                            wake.cancel()
                        for finished in [b for b, t in held.items() if t.done()]:
                            task = held.pop(finished)
                            tenants.pop(finished, None)
                            if not task.cancelled() and task.exception() is not None:
                                log.error("batch worker error", exc_info=task.exception())
                        continue
                    held[batch["id"]] = asyncio.create_task(self._hold(batch))
                    tenants[batch["id"]] = batch["tenant_id"]
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - the worker outlives one batch's unexpected failure
                    log.exception("batch worker error")
                    await asyncio.sleep(1.0)
        finally:
            for task in held.values():
                task.cancel()
            await asyncio.gather(*held.values(), return_exceptions=True)

    async def _hold(self, batch: dict) -> None:
        """Processes a claimed batch while renewing its lease; losing the lease (another worker took the batch
        over) stops that work at once, not the worker."""
        work = asyncio.create_task(self._process(batch))

        async def renew():
            while True:
                await asyncio.sleep(self._lease / 3)
                if not await asyncio.to_thread(self._store.renew, batch["id"], self._owner, self._lease):
                    log.warning("batch lease lost", extra={"fields": {"batch_id": batch["id"]}})
                    work.cancel()
                    return

        renewer = asyncio.create_task(renew())
        try:
            await asyncio.shield(work)
        except asyncio.CancelledError:
            if not work.cancelled():  # the worker itself is stopping: so does its batch
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
                raise
        finally:
            renewer.cancel()
            with contextlib.suppress(Exception):
                await asyncio.to_thread(self._store.release, batch["id"], self._owner)

    async def _process(self, batch: dict) -> None:
        batch_id, tenant_id = batch["id"], batch["tenant_id"]
        try:
            data = await asyncio.to_thread(self._vault.read, tenant_id, batch["input_file_id"])
            lines = await asyncio.to_thread(bl.parse_batch_file, data, batch["endpoint"])
        except (FileNotFoundError, DecryptionError, ApiError) as e:
            message = e.message if isinstance(e, ApiError) else "The input file is no longer available."
            await self._fail(batch, message)
            return
        del data
        if batch["status"] == "validating":
            now = int(time.time())
            await asyncio.to_thread(self._store.update_batch, batch_id, ("validating",), status="in_progress",
                                    in_progress_at=now)
            batch = await asyncio.to_thread(self._store.get_batch, batch_id)
        if batch["status"] in ("in_progress", "cancelling", "finalizing"):
            await self._recover(batch)
        if batch["status"] == "in_progress" and batch_id not in self._cancelled:
            await self._dispatch(batch, lines)
        await self._finalize(batch_id, lines)

    async def _fail(self, batch: dict, message: str) -> None:
        errors = json.dumps({"object": "list", "data": [{"code": "invalid_input_file", "message": message,
                                                          "param": "input_file_id", "line": None}]})
        await asyncio.to_thread(self._store.finalize, batch["id"], self._owner, [],
                                {"status": "failed", "failed_at": int(time.time()), "errors": errors})

    def _caller(self, batch: dict, request_id: str):
        identity = identity_from_json(batch["tenant_id"], batch["key_id"], batch["identity"])
        return self._pipeline.caller_for(identity, request_id, f"batch {batch['endpoint']}", batch["client_address"])

    async def _recover(self, batch: dict) -> None:
        """What a killed worker left: `running` lines released and queued again, `done` lines settled again."""
        batch_id = batch["id"]
        states = await asyncio.to_thread(self._store.lines, batch_id)
        released = await self._release(batch, [s for s in states if s.state == "running"])
        resettled = 0
        for s in states:
            request_id = bl.line_request_id(batch_id, s.line, s.attempt)
            if s.state == "done" and s.ok:
                self._pipeline.settle(self._caller(batch, request_id), request_id,
                                      Usage(s.prompt_tokens, s.completion_tokens), "completed")
                resettled += 1
        if released or resettled:
            log.info("batch resumed", extra={"fields": {"batch_id": batch_id, "released": released,
                                                        "settled_again": resettled}})

    async def _release(self, batch: dict, running: list) -> int:
        """Lines another worker left `running` (this one holds the batch's lease: nobody runs them): their attempt
        settled `cancelled` (nothing billed) and the line queued again."""
        for s in running:
            request_id = bl.line_request_id(batch["id"], s.line, s.attempt)
            self._pipeline.settle(self._caller(batch, request_id), request_id, Usage(), "cancelled")
            await asyncio.to_thread(self._store.requeue_line, batch["id"], s.line)
        return len(running)

    def _may_start(self, batch_running: int) -> bool:
        """Whether a batch with `batch_running` lines in flight may start another now (the module's docstring:
        fairness). The batches being dispatched share the concurrency evenly."""
        now = time.monotonic()
        busy = (now - self._pipeline.last_interactive < QUIET_SECONDS
                or self._pipeline.backend_outstanding > self._generating)
        if busy:
            return self._lines_running < self._yield_to or (
                self._lines_running == 0 and now - self._last_start >= MIN_PROGRESS_SECONDS)
        share = -(-self._concurrency // max(1, self._dispatching))  # rounded up: no slot left idle
        return self._lines_running < self._concurrency and batch_running < share

    async def _dispatch(self, batch: dict, lines: list[bl.BatchLine]) -> None:
        """Runs the pending lines, a bounded number at once, until none is left or the batch stops (cancelled,
        expired, or no longer this worker's). Lines sent back to the queue (a refusal to retry) are picked up again."""
        batch_id = batch["id"]
        running: set[asyncio.Task] = set()
        queue: list[int] = []
        last_check = last_refill = 0.0
        self._dispatching += 1
        try:
            while True:
                now = time.monotonic()
                if batch_id in self._cancelled or time.time() >= batch["expires_at"]:
                    break
                if now - last_check > self._poll:
                    last_check = now
                    if await self._should_stop(batch):
                        break
                if not queue and (not running or now - last_refill > self._poll):
                    last_refill = now
                    queue = [s.line for s in reversed(await asyncio.to_thread(self._store.lines, batch_id, "pending"))]
                    if not queue and not running:
                        # A stopped worker's last write can land after this one recovered the batch (a thread
                        # finishing a line's start): its `running` lines would otherwise never run.
                        orphans = await asyncio.to_thread(self._store.lines, batch_id, "running")
                        if not orphans:
                            break
                        await self._release(batch, orphans)
                        continue
                if queue and now >= self._pause_until.get(batch_id, 0.0) and self._may_start(len(running)):
                    self._last_start = now
                    task = asyncio.create_task(self._run_line(batch, lines[queue.pop()]))
                    running.add(task)
                    self._lines_running += 1
                    task.add_done_callback(self._line_done(running))
                    continue
                if running:
                    await asyncio.wait(set(running), timeout=0.05, return_when=asyncio.FIRST_COMPLETED)
                else:
                    await asyncio.sleep(0.05)
            # Cancel and expiry stop new dispatches; what was dispatched completes.
            if running:
                await asyncio.gather(*running, return_exceptions=True)
        finally:
            self._dispatching -= 1
            for task in running:
                task.cancel()

    def _line_done(self, running: set[asyncio.Task]):
        def done(task: asyncio.Task) -> None:
            running.discard(task)
            self._lines_running -= 1
        return done

    async def _should_stop(self, batch: dict) -> bool:
        current = await asyncio.to_thread(self._store.get_batch, batch["id"])
        if current is None or current["status"] != "in_progress":
            self._cancelled.add(batch["id"])
            return True
        return time.time() >= batch["expires_at"]

    async def _run_line(self, batch: dict, line: bl.BatchLine) -> None:
        batch_id = batch["id"]
        attempt = await asyncio.to_thread(self._store.start_line, batch_id, line.index)
        if attempt is None:
            return
        request_id = bl.line_request_id(batch_id, line.index, attempt)
        caller = self._caller(batch, request_id)
        # Each line its own trace (a batch may last hours: no span spans it), named by the batch and line.
        with tracer.start_as_current_span("batch line", context=trace.set_span_in_context(trace.INVALID_SPAN)) as span:
            span.set_attribute("llmaas.batch_id", batch_id)
            span.set_attribute("llmaas.batch_line", line.index)
            span.set_attribute("llmaas.request_id", request_id)
            try:
                caller = await self._current_caller(batch, caller)
                if line.url == "/v1/embeddings":
                    await self._embedding_line(batch, line, attempt, caller)
                else:
                    await self._chat_line(batch, line, attempt, caller)
            except ApiError as err:
                if err.status in _RETRY_LATER:
                    await self._retry_later(batch_id, line, err)
                    return
                await self._commit(batch, line, attempt, request_id, False, Usage(),
                                   err.http_status, err.body())
            except asyncio.CancelledError:
                raise  # left `running`: the next worker releases and reruns it
            except Exception:  # noqa: BLE001 - an unexpected failure is this line's, not the batch's
                log.exception("batch line failed", extra={"fields": {"request_id": request_id}})
                await self._commit(batch, line, attempt, request_id, False, Usage(), 500, internal_error().body())

    async def _current_caller(self, batch: dict, caller):
        """`caller` with its key's identity as auth has it now (see the module's doc: Permissions)."""
        key, now = (batch["tenant_id"], batch["key_id"]), time.monotonic()
        known = self._keys.get(key)
        if known is None or now >= known[0]:
            known = self._keys[key] = (now + KEY_CHECK_SECONDS, await self._pipeline.current_identity(caller))
        identity: Identity | None = known[1]
        if identity is None:
            raise ApiError(grpc.StatusCode.UNAUTHENTICATED, "The API key that created this batch was revoked or has "
                           "expired: its remaining requests are not run.", code="invalid_api_key")
        if identity == caller.identity:
            return caller
        return self._pipeline.caller_for(identity, caller.request_id, caller.endpoint, caller.client_address)

    async def _retry_later(self, batch_id: str, line: bl.BatchLine, err: ApiError) -> None:
        retry = next((v for k, v in err.headers if k == "retry-after"), "1")
        try:
            pause = min(max(float(retry), 0.2), MAX_PAUSE_SECONDS)
        except ValueError:
            pause = 1.0
        self._pause_until[batch_id] = max(self._pause_until.get(batch_id, 0.0), time.monotonic() + pause)
        await asyncio.to_thread(self._store.requeue_line, batch_id, line.index)

    async def _chat_line(self, batch: dict, line: bl.BatchLine, attempt: int, caller) -> None:
        """A /v1/chat/completions or /v1/completions line: the same parsing and answer as the interactive ones."""
        legacy = line.url == "/v1/completions"
        if legacy:
            request = _parse_body(line.body, router_pb2.CreateCompletionRequest())
            run = await self._pipeline.prepare_for(caller, request, kind="batch",
                                                   parse=completions.parse_completion_request)
        else:
            request = _parse_body(line.body, router_pb2.CreateChatCompletionRequest())
            run = await self._pipeline.prepare_for(caller, request, kind="batch")
        generations = max(1, len(run.choices))  # a line with n choices puts n generations at the replicas
        self._generating += generations
        try:
            per_choice = await self._pipeline.collect(run)
        except BaseException:
            # A line that fails is not billed (the error file carries no usage): released, whatever was produced.
            self._pipeline.finish(run, billed=False)
            raise
        finally:
            self._generating -= generations
        if legacy:
            body = completions.completion(run, per_choice, oj.system_fingerprint(run))
        else:
            body = oj.completion_of(run, per_choice)
        await self._commit(batch, line, attempt, run.request_id, True, run.usage, 200, raw_body=oj.json_body(body))
        self._pipeline.finish(run)  # settles and records, after the result is safe

    async def _embedding_line(self, batch: dict, line: bl.BatchLine, attempt: int, caller) -> None:
        request = _parse_body(line.body, router_pb2.CreateEmbeddingRequest())
        self._generating += 1
        try:
            model_id, encoding, vectors, tokens = await self._embeddings.embed_for(caller, request, kind="batch")
        except ApiError as err:
            self._pipeline.record(caller, "", Usage(), err)  # the audit trail says how the line ended
            raise
        finally:
            self._generating -= 1
        body = await asyncio.to_thread(embedding_json, model_id, vectors, tokens, encoding)
        usage = Usage(prompt_tokens=tokens)
        await self._commit(batch, line, attempt, caller.request_id, True, usage, 200, raw_body=body)
        self._pipeline.settle(caller, caller.request_id, usage, "completed")
        self._pipeline.record(caller, model_id, usage, None)

    async def _commit(self, batch: dict, line: bl.BatchLine, attempt: int, request_id: str, ok: bool, usage: Usage,
                      status: int, body: dict | None = None, raw_body: bytes | None = None) -> None:
        """The line's output (encrypted) and usage, committed."""
        if raw_body is None:
            raw_body = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        envelope = bl.output_line(batch["id"], line, request_id, status, {})
        text = json.dumps(envelope, ensure_ascii=False, separators=(",", ":")).encode()
        text = text.replace(b'"body":{}', b'"body":' + raw_body, 1)
        blob = self._vault.keys.encrypt(batch["tenant_id"], f"{batch['id']}:{line.index}", text)
        await asyncio.to_thread(self._store.finish_line, batch["id"], line.index, attempt, ok, usage.prompt_tokens,
                                usage.completion_tokens, blob)

    async def _finalize(self, batch_id: str, lines: list[bl.BatchLine]) -> None:
        batch = await asyncio.to_thread(self._store.get_batch, batch_id)
        if batch is None or batch["status"] not in ("in_progress", "cancelling", "finalizing", "validating"):
            return
        now = int(time.time())
        cancelled = batch["status"] == "cancelling" or batch_id in self._cancelled
        if batch["status"] == "in_progress" and not cancelled:
            await asyncio.to_thread(self._store.update_batch, batch_id, ("in_progress",), status="finalizing",
                                    finalizing_at=now)
        tenant_id = batch["tenant_id"]
        output, errors = await asyncio.to_thread(self._collect, batch, lines, cancelled)
        pending = sum(1 for o in errors if o[1])
        expired = not cancelled and pending > 0
        new_files, values = [], {}
        for kind, chunks in (("output", [c for c, _ in output]), ("error", [c for c, _ in errors])):
            if not chunks:
                continue
            file_id = new_file_id()
            data = b"".join(chunks)
            await asyncio.to_thread(self._vault.write_blob, tenant_id, file_id, data)
            new_files.append(self._vault.file_row(tenant_id, file_id, "batch_output", f"{batch_id}_{kind}.jsonl",
                                                  len(data)))
            values[f"{kind}_file_id"] = file_id
        now = int(time.time())
        status = "cancelled" if cancelled else "expired" if expired else "completed"
        values |= {"status": status, f"{status}_at": now}
        if not await asyncio.to_thread(self._store.finalize, batch_id, self._owner, new_files, values):
            for row in new_files:
                await asyncio.to_thread(self._vault.erase_blob, row["id"])
        self._cancelled.discard(batch_id)
        self._pause_until.pop(batch_id, None)

    def _collect(self, batch: dict, lines: list[bl.BatchLine], cancelled: bool):
        """The output and error files' lines (each: bytes, whether the line never ran), in input order."""
        output, errors = [], []
        code, message = (("batch_cancelled", "The batch was cancelled before this request ran.") if cancelled else
                         ("batch_expired", "This request could not be executed before the completion window "
                                           "expired."))
        start = 0
        while True:
            chunk = self._store.results(batch["id"], start, FINALIZE_CHUNK)
            if not chunk:
                break
            for index, ok, result in chunk:
                if result is not None:
                    text = self._vault.keys.decrypt(batch["tenant_id"], f"{batch['id']}:{index}", result)
                    (output if ok else errors).append((text + b"\n", False))
                else:
                    failed = bl.failed_line(lines[index], code, message)
                    errors.append((json.dumps(failed, ensure_ascii=False).encode() + b"\n", True))
            start = chunk[-1][0] + 1
        return output, errors


def _parse_body(body: dict, message):
    """A line's body as the endpoint's request (what Envoy's transcoder does with the interactive request's JSON)."""
    refuse_unknown_fields(body, message.DESCRIPTOR)  # as the edge does for the interactive request
    try:
        return json_format.ParseDict(body, message)
    except json_format.ParseError as e:
        raise invalid_request(f"The request body is invalid: {str(e)[:300]}", code="invalid_request_body") from None
