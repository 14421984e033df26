"""Failed authentications are cheap to refuse: limited per client address, and audited as counts.

A request without a credential, or with one that is malformed, unknown, revoked or expired, costs auth a key check
(a cache or an indexed read) and, until now, a durable audit record of its own: the write is what an attacker could
buy in bulk. So:

- FailureLimiter: a token bucket per client address that only FAILED attempts draw from (GCRA: one float per
  address). Past FAILURE_BURST failures, at most FAILURE_RATE a second are answered 401; the others get a 429
  `rate_limit_exceeded` with Retry-After. A valid key is checked first and never touches the bucket, so it is served
  whatever the same address (a NAT, a proxy, the tests' 127.0.0.1) sent before. IPv6 addresses share a bucket per
  /64 (one host's allocation). Memory is bounded: at most MAX_ADDRESSES buckets, least recently failing first out
  once full again (an idle bucket is one that has refilled: dropping it forgets nothing); while all are in use, new
  addresses share one overflow bucket, so rotating addresses buys nothing either.
- DenialTally: one audit record per (client address, reason, status) per DENIED_WINDOW seconds carrying `count`,
  handed to the audit log's write-behind path, instead of one record per request. 429s are counted too (status
  429, the reason in `detail`): nothing refused is missing from the trail. At most MAX_TALLIES distinct addresses
  per window; beyond them the counts go to address "*". A record is durable within the window plus the audit
  bound; a crash of the replica loses at most one window's counts.

Each auth replica limits on its own (the buckets are in memory): with N replicas behind Envoy's round robin, an
address gets up to N times the rate. Auth denials are rare and cheap now, so a shared bucket (a Redis round trip on
every failure) is not worth its latency.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import ipaddress
import math
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import replace

import grpc

from llmaas.auth.audit import AuditLog, AuditRecord
from llmaas.common.errors import ApiError

# Defaults, each overridden by its LLMAAS_AUTH_* setting (llmaas.auth.__main__).
FAILURE_RATE = 10.0  # failed attempts a second per address, sustained (LLMAAS_AUTH_FAILURE_RATE)
FAILURE_BURST = 50  # failed attempts at once before the rate applies (LLMAAS_AUTH_FAILURE_BURST)
MAX_ADDRESSES = 10_000  # buckets kept (LLMAAS_AUTH_FAILURE_ADDRESSES): 0.7 MB measured
DENIED_WINDOW = 1.0  # seconds one aggregated record covers (LLMAAS_AUTH_DENIED_AUDIT_WINDOW_SECONDS)
MAX_TALLIES = 1_000  # distinct addresses recorded per window; the rest under "*"

OVERFLOW = "*"


def rate_limited(retry_after: float) -> ApiError:
    return _rate_limited(max(1, math.ceil(retry_after)))


@functools.lru_cache(maxsize=64)
def _rate_limited(seconds: int) -> ApiError:
    """One error per Retry-After value (the same object each time: ext_authz keeps its answer)."""
    return ApiError(grpc.StatusCode.RESOURCE_EXHAUSTED, "Too many failed authentication attempts from your address. "
                    f"Retry after {seconds} s; a valid API key is always accepted.", code="rate_limit_exceeded",
                    headers=(("retry-after", str(seconds)),))


def client_host(address: str) -> str:
    """The host of a client address: Envoy gives a bare IP; a gRPC peer (direct callers, through the router's
    Authenticate) is `ipv4:1.2.3.4:port` or `ipv6:[::1]:port` (brackets maybe %-encoded), whose port changes with
    every connection and must not make a new budget."""
    kind, colon, rest = address.partition(":")
    if not colon or kind not in ("ipv4", "ipv6"):
        return address
    if kind == "ipv4":
        return rest.rpartition(":")[0] or rest
    rest = rest.replace("%5B", "[").replace("%5D", "]")
    return rest[1:rest.index("]")] if rest.startswith("[") and "]" in rest else rest


def bucket_of(address: str) -> str:
    """The bucket an address draws from: IPv4 as is, IPv6 by /64, an IPv4-mapped IPv6 address as its IPv4."""
    address = client_host(address)
    if ":" not in address:
        return address
    try:
        ip = ipaddress.IPv6Address(address.partition("%")[0])
    except ValueError:
        return address
    if ip.ipv4_mapped is not None:
        return str(ip.ipv4_mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class FailureLimiter:
    """Per-address failure budget. `take(address)`: 0.0 when the failure may be answered as such, else the seconds
    until the address may fail again (answer 429). Refused attempts draw nothing: the wait does not grow."""

    def __init__(self, rate: float = FAILURE_RATE, burst: int = FAILURE_BURST, max_addresses: int = MAX_ADDRESSES,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = 1.0 / rate
        # How far ahead of now the bucket's arrival time may be (plus a hair: sums of intervals are not exact).
        self._tolerance = (burst - 1) * self._interval + 1e-9
        self._max = max_addresses
        self._clock = clock
        # bucket -> theoretical arrival time (when the bucket is full again); least recently failing first
        self._tats: OrderedDict[str, float] = OrderedDict()
        self._overflow = 0.0

    def __len__(self) -> int:
        return len(self._tats)

    def take(self, address: str) -> float:
        now = self._clock()
        key = bucket_of(address)
        tat = self._tats.get(key)
        if tat is None:
            self._forget_refilled(now)
            if len(self._tats) >= self._max:
                wait, self._overflow = self._draw(self._overflow, now)
                return wait
            tat = now
        else:
            self._tats.move_to_end(key)
        wait, self._tats[key] = self._draw(tat, now)
        return wait

    def _draw(self, tat: float, now: float) -> tuple[float, float]:
        tat = max(tat, now)
        if tat - now > self._tolerance:
            return tat - now - self._tolerance, tat
        return 0.0, tat + self._interval

    def _forget_refilled(self, now: float) -> None:
        """Drops the buckets that are full again, oldest first (O(1) per bucket ever added)."""
        while self._tats:
            key, tat = next(iter(self._tats.items()))
            if tat > now:
                return
            del self._tats[key]


class DenialTally:
    """Counts failed authentications per (client address, reason, HTTP status) and hands the audit log one record
    per key and window, with its count, written behind."""

    def __init__(self, audit: AuditLog, window: float = DENIED_WINDOW, max_addresses: int = MAX_TALLIES) -> None:
        self._audit = audit
        self._window = window
        self._max = max_addresses
        self._addresses: set[str] = set()
        self._counts: dict[tuple[str, str, int], list] = {}  # key -> [first record, count]
        self._task: asyncio.Task | None = None

    def count(self, record: AuditRecord) -> None:
        """`record`: the request.denied record this request would have had on its own (reason in `detail`)."""
        address = client_host(record.client_address)
        if address != record.client_address:
            record = replace(record, client_address=address)
        if address not in self._addresses:
            if len(self._addresses) >= self._max:
                address = OVERFLOW
                record = replace(record, client_address=OVERFLOW)
            else:
                self._addresses.add(address)
        key = (address, record.detail, record.status)
        entry = self._counts.get(key)
        if entry is None:
            self._counts[key] = [record, 1]
        else:
            entry[1] += 1
        if self._task is None or self._task.done():
            # In a context of its own: not the first request's (its spans and logs).
            self._task = asyncio.get_running_loop().create_task(self._flush_every_window(),
                                                               context=contextvars.Context())

    @property
    def pending(self) -> int:
        """Requests counted and not handed over yet."""
        return sum(n for _, n in self._counts.values())

    def flush(self) -> None:
        """Hands over what was counted (one record per key)."""
        counts, self._counts, self._addresses = self._counts, {}, set()
        self._audit.submit_behind([replace(record, count=n) for record, n in counts.values()])

    async def _flush_every_window(self) -> None:
        while self._counts:
            await asyncio.sleep(self._window)
            self.flush()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        self.flush()
