"""What one request may cost the guard, so that no tenant's prompt can slow the others (a 24 MB prompt used to hold
the event loop for 22 s, and every other tenant's check timed out behind it).

- **Bytes analysed.** A request's parts are analysed up to MAX_ANALYSED_CHARS characters in all. Beyond it, the
  analysis keeps a head and a tail of every part, in proportion to its length, and the request gets an `oversized`
  finding of score 1: an attacker would hide the attack past any cap, so what was not read is refused under enforce,
  whatever the threshold, and reported under shadow. The router's own size limits refuse most of these earlier.
- **Steps.** A text longer than CHUNK_CHARS is analysed in chunks of about that size (cut at whitespace, overlapping
  by OVERLAP_CHARS so that a phrase across a cut is still read, never cutting a token a payload decoder would read),
  in a worker process (offload.py; without one, on the event loop, given back between two chunks), so that a small
  request, analysed at once on the event loop, never waits behind a long one. Findings are merged per reason (the
  highest score), so a long honest text does not add up weak signals; a text of one chunk is read as before.
- **Time.** A request's own analysis time (its chunks, not the time it waited for others) is bounded by
  WORK_SECONDS, and its answer comes before the caller's deadline; what was left unread then gets an
  `analysis_incomplete` finding of score 1 (refused under enforce, as oversized).
- **Concurrency.** A request of more than one chunk holds one of its tenant's TENANT_CONCURRENCY slots (and one of
  the service's GLOBAL_CONCURRENCY): a tenant flooding large prompts has at most that many chunks queued for the
  worker at a time, so another tenant's long prompt waits for a few chunks, not for the flood; its further large
  requests wait for a slot and are refused with a 429 after QUEUE_SECONDS.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from dataclasses import dataclass

import grpc

from llmaas.common.errors import ApiError
from llmaas.guard.encoded import MAX_BLOB_CHARS

MAX_ANALYSED_CHARS = 256 * 1024
CHUNK_CHARS = 4096
OVERLAP_CHARS = 256
WORK_SECONDS = 2.0
# The answer is sent this long before the caller's deadline, with what was analysed by then.
DEADLINE_MARGIN_SECONDS = 0.5
TENANT_CONCURRENCY = 2
GLOBAL_CONCURRENCY = 4
QUEUE_SECONDS = 2.0
MAX_WAITING = 64  # per tenant: beyond, refused at once

OVERSIZED = "oversized"
INCOMPLETE = "analysis_incomplete"


@dataclass(frozen=True)
class Budget:
    max_chars: int = MAX_ANALYSED_CHARS
    chunk_chars: int = CHUNK_CHARS
    work_seconds: float = WORK_SECONDS
    tenant_concurrency: int = TENANT_CONCURRENCY
    global_concurrency: int = GLOBAL_CONCURRENCY
    queue_seconds: float = QUEUE_SECONDS


def windows(lengths: list[int], max_chars: int) -> tuple[list[list[tuple[int, int]]], bool]:
    """The (start, end) windows of each part to analyse, and whether anything is left out. Within the bound:
    every part whole. Beyond: each part gets a share of the bound in proportion to its length, its head and its
    tail (a short part among huge ones may get nothing)."""
    total = sum(lengths)
    if total <= max_chars:
        return [[(0, n)] if n else [] for n in lengths], False
    plan = []
    for n in lengths:
        share = max_chars * n // total
        if share >= n:
            plan.append([(0, n)] if n else [])
        elif share < 2:
            plan.append([])
        else:
            plan.append([(0, share // 2), (n - (share - share // 2), n)])
    return plan, True


def chunks(text: str, start: int, end: int, size: int = CHUNK_CHARS) -> list[tuple[int, int]]:
    """text[start:end] as chunks of about `size` characters, cut at whitespace where there is some in the last
    quarter of a chunk, each overlapping the previous one by OVERLAP_CHARS (from a whitespace too). A token that
    crosses a cut and is short enough to be a decodable payload (encoded.MAX_BLOB_CHARS) is kept whole: the chunk
    reaches its end. Only text[start:end] is ever read (never the whole of a huge text)."""
    if end - start <= size:
        return [(start, end)]
    found = []
    at = start
    while at < end:
        cut = at + size
        if cut >= end:
            found.append((at, end))
            break
        space = _last_space(text, cut - size // 4, cut)
        if space is None:
            # Inside a long token: go on to its end if it is a payload the decoder would read.
            after = _first_space(text, cut, min(end, cut + MAX_BLOB_CHARS))
            cut = after if after is not None else cut
        else:
            cut = space
        found.append((at, cut))
        if cut >= end:
            break
        back = _first_space(text, max(at + 1, cut - OVERLAP_CHARS), cut)
        at = back if back is not None else cut
    return found


def _last_space(text: str, lo: int, hi: int) -> int | None:
    window = text[lo:hi]
    for i in range(len(window) - 1, -1, -1):  # a quarter chunk at most
        if window[i].isspace():
            return lo + i
    return None


def _first_space(text: str, lo: int, hi: int) -> int | None:
    window = text[lo:hi]
    for i, c in enumerate(window):  # MAX_BLOB_CHARS at most
        if c.isspace():
            return lo + i
    return None


class Busy(Exception):
    pass


class _Slots:
    """A counting semaphore whose waiters are served in arrival order and give up after a time."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.used = 0
        self.waiters: deque[asyncio.Future] = deque()

    async def acquire(self, timeout: float, max_waiting: int | None = None) -> None:
        if self.used < self.limit and not self.waiters:
            self.used += 1
            return
        if max_waiting is not None and len(self.waiters) >= max_waiting:
            raise Busy
        waiter = asyncio.get_running_loop().create_future()
        self.waiters.append(waiter)
        try:
            await asyncio.wait_for(asyncio.shield(waiter), timeout)
        except BaseException as e:  # timed out or cancelled (the caller left)
            if waiter.done() and not waiter.cancelled():
                self.release()  # granted just as it gave up: pass it on
            else:
                waiter.cancel()
                self.waiters.remove(waiter)
            if isinstance(e, TimeoutError):
                raise Busy from None
            raise
        # granted by release(): self.used was kept for us

    def release(self) -> None:
        while self.waiters:
            waiter = self.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to it
                return
        self.used -= 1

    @property
    def idle(self) -> bool:
        return self.used == 0 and not self.waiters


class Limiter:
    """Slots for requests of more than one chunk: per tenant and for the whole service."""

    def __init__(self, budget: Budget) -> None:
        self._budget = budget
        self._tenants: dict[str, _Slots] = {}
        self._global = _Slots(budget.global_concurrency)

    def in_progress(self, tenant_id: str) -> int:
        slots = self._tenants.get(tenant_id)
        return slots.used if slots else 0

    async def acquire(self, tenant_id: str, timeout: float) -> None:
        """Raises ApiError (429) when no slot frees up within `timeout` (or too many requests already wait)."""
        until = time.monotonic() + max(0.0, timeout)
        slots = self._tenants.get(tenant_id)
        if slots is None:
            slots = self._tenants[tenant_id] = _Slots(self._budget.tenant_concurrency)
        try:
            await slots.acquire(max(0.0, until - time.monotonic()), MAX_WAITING)
        except Busy:
            self._forget(tenant_id)
            raise too_busy() from None
        try:
            await self._global.acquire(max(0.0, until - time.monotonic()))
        except BaseException as e:
            slots.release()
            self._forget(tenant_id)
            if isinstance(e, Busy):
                raise too_busy() from None
            raise

    def release(self, tenant_id: str) -> None:
        self._global.release()
        slots = self._tenants.get(tenant_id)
        if slots is not None:
            slots.release()
            self._forget(tenant_id)

    def _forget(self, tenant_id: str) -> None:
        slots = self._tenants.get(tenant_id)
        if slots is not None and slots.idle:
            del self._tenants[tenant_id]


def too_busy() -> ApiError:
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                    "Too many large prompts of this organization are being checked at once; retry shortly.",
                    code="rate_limit_exceeded", headers=(("retry-after", "1"),))
