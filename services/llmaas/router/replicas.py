"""The Triton replicas behind a model: which one takes a request, which ones are out of rotation, and retries.

The catalog names the replicas of a model's pool that serve it now (ResolveModelResponse.endpoints, refreshed within
its poll interval); the router reacts faster on its own:
- **Balancing**: least outstanding requests among the replicas in rotation (ties broken at random).
- **Ejection**: a circuit breaker per replica (refused, reset, stream cut: the server is gone) and per model on a
  replica (the model's instance died or is reloading). An open breaker takes it out of rotation; once its cool-down
  is over, a background probe (ServerReady / ModelReady) puts it back or keeps it out longer (llmaas.router.breaker).
- **Retries**: a request that fails for a replica-side reason before anything reached the client goes to another
  replica in rotation. A stream is retryable until its first delta; a non-streamed request is buffered here, so it is
  retryable until its final response. At most MAX_ATTEMPTS replicas per request, so that a request that crashes
  whatever serves it cannot take every replica down in turn.
- With no replica in rotation the answer is at once a 503 `model_unavailable` with Retry-After.
- A model's instance that failed is reported to the catalog (`on_model_failure`), which reloads it on that replica.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing

import grpc

from llmaas.common.errors import ApiError, model_unavailable
from llmaas.router import metrics
from llmaas.router.breaker import Breaker, State
from llmaas.router.triton import Delta, ReplicaFailure, TritonReplica

log = logging.getLogger("llmaas.router.replicas")

MAX_ATTEMPTS = 2
# A replica out of rotation that the catalog lists again is probed at most this often before its cool-down ends.
NUDGE_INTERVAL = 0.5
# A replica out of rotation that no resolution has named for this long is no longer probed.
FORGET_AFTER = 60.0
# Retry-After when nothing better is known (the catalog reloads a crashed model within a few seconds).
DEFAULT_RETRY_AFTER = 2


class ReplicaPool:
    def __init__(self, replica_factory: Callable[[str], TritonReplica] = TritonReplica, *,
                 on_model_failure: Callable[[str, str], Awaitable[None]] | None = None) -> None:
        """`on_model_failure(replica, triton_model)`: told when a model's instance failed on a replica (the catalog
        reloads it); runs in the background, its errors are logged."""
        self._factory = replica_factory
        self._on_model_failure = on_model_failure
        self._replicas: dict[str, TritonReplica] = {}
        self._outstanding: dict[str, int] = {}
        # (address, None): the server; (address, triton model): the model on it.
        self._breakers: dict[tuple[str, str | None], Breaker] = {}
        self._probes: set[asyncio.Task] = set()
        # When each replica was last named by a resolution: one nobody names any more is no longer probed.
        self._listed: dict[str, float] = {}

    @property
    def outstanding(self) -> int:
        """Requests at the replicas now, all replicas together."""
        return sum(self._outstanding.values())

    def replica(self, address: str) -> TritonReplica:
        if address not in self._replicas:
            self._replicas[address] = self._factory(address)
            self._outstanding[address] = 0
        return self._replicas[address]

    def _breaker(self, address: str, model: str | None) -> Breaker:
        # Not setdefault: a Breaker (and its asyncio.Event) built per call only to be thrown away cost ~5% of the
        # router's CPU under load (two lookups per request).
        breaker = self._breakers.get((address, model))
        if breaker is None:
            breaker = self._breakers[(address, model)] = Breaker()
        return breaker

    def breaker_states(self) -> list[tuple[str, str | None, bool]]:
        """(replica, model or None for the server, in rotation) of every replica and model this router has used:
        the metrics' view (llmaas.router.metrics.ReplicaHealth)."""
        states = {(a, None): True for a in self._replicas}
        states |= {key: breaker.closed for key, breaker in list(self._breakers.items())}
        return [(a, m, closed) for (a, m), closed in states.items()]

    def in_rotation(self, address: str, model: str) -> bool:
        return all(self._breaker(address, m).closed for m in (None, model))

    def pick(self, endpoints: list[str] | tuple[str, ...], model: str, exclude: set[str]) -> str | None:
        """The replica in rotation with the fewest outstanding requests, or None. The catalog lists only replicas it
        found ready: one listed while out of rotation here is probed now rather than at the end of its cool-down."""
        candidates = []
        now = time.monotonic()
        for address in endpoints:
            self._listed[address] = now
            if address in exclude:
                continue
            if self.in_rotation(address, model):
                candidates.append(address)
            else:
                self._nudge(address, model)
        if not candidates:
            return None
        for address in candidates:
            self.replica(address)
        fewest = min(self._outstanding[a] for a in candidates)
        return random.choice([a for a in candidates if self._outstanding[a] == fewest])

    def _nudge(self, address: str, model: str) -> None:
        now = time.monotonic()
        for key in ((address, None), (address, model)):
            breaker = self._breakers.get(key)
            if breaker is not None and not breaker.closed and now - breaker.last_probe >= NUDGE_INTERVAL:
                breaker.wake.set()

    def retry_after(self, endpoints, model: str) -> int:
        """Seconds until the soonest replica of `endpoints` may be back in rotation (at least 1)."""
        waits = [max(self._breaker(a, m).seconds_left() for m in (None, model)) for a in endpoints]
        soonest = min(waits, default=DEFAULT_RETRY_AFTER)
        return max(1, math.ceil(soonest + 0.5)) if waits else DEFAULT_RETRY_AFTER

    def report_failure(self, address: str, model: str, failure: ReplicaFailure) -> None:
        key = (address, model if failure.model_level else None)
        breaker = self._breaker(*key)
        breaker.fail()
        metrics.backend_error(address, model, failure.model_level)
        log.warning("replica out of rotation", extra={"fields": {
            "replica": address, "model": key[1] or "*", "failures": breaker.failures,
            "cool_down_s": round(breaker.seconds_left(), 2), "error": str(failure)}})
        self._schedule_probe(key)
        if failure.model_level and self._on_model_failure is not None:
            self._in_background(self._tell(address, model))

    async def _tell(self, address: str, model: str) -> None:
        try:
            await self._on_model_failure(address, model)
        except Exception as e:  # noqa: BLE001 - best effort: the catalog's poll notices a failed load anyway
            log.warning("replica failure not reported", extra={"fields": {"replica": address, "error": str(e)[:200]}})

    def _in_background(self, coro) -> None:
        task = asyncio.create_task(coro)
        self._probes.add(task)
        task.add_done_callback(self._probes.discard)

    def _schedule_probe(self, key: tuple[str, str | None]) -> None:
        breaker = self._breakers[key]
        if breaker.probing:
            return
        breaker.probing = True
        self._in_background(self._probe(key))

    async def _probe(self, key: tuple[str, str | None]) -> None:
        """Half-open: after each cool-down, asks the replica whether it is ready again, or the model on it for one
        token (Triton's ModelReady says yes while a dead instance fails every request)."""
        address, model = key
        breaker = self._breakers[key]
        replica = self.replica(address)
        while not breaker.closed:
            try:
                await asyncio.wait_for(breaker.wake.wait(), breaker.seconds_left())
            except TimeoutError:
                pass
            if breaker.wake.is_set():
                breaker.wake.clear()
            elif breaker.state() is not State.HALF_OPEN:
                continue  # failed again meanwhile: a longer cool-down started
            if time.monotonic() - self._listed.get(address, 0.0) > FORGET_AFTER:
                # Gone from the catalog's answers (removed from its pool, or no request for it since): forgotten,
                # so it is in rotation again should a resolution name it, and fails over as usual if still broken.
                self._breakers.pop(key, None)
                log.info("replica forgotten", extra={"fields": {"replica": address, "model": model or "*"}})
                return
            breaker.last_probe = time.monotonic()
            ready = await (replica.canary(model) if model else replica.server_ready())
            if ready:
                breaker.succeed()
                log.info("replica back in rotation", extra={"fields": {"replica": address, "model": model or "*"}})
                return
            breaker.fail()  # and this task keeps probing
            if model and ready is False and self._on_model_failure is not None:
                # Still dead (the catalog may think otherwise: Triton's ModelReady says yes): tell it again.
                await self._tell(address, model)

    async def generate(self, endpoints: list[str] | tuple[str, ...], model: str, prompt: str, sampling: dict,
                       request_id: str, *, buffered: bool, whole: bool = False, public_model: str = "",
                       images: tuple[bytes, ...] = (),
                       on_produced: Callable[[Delta | None], None] = lambda _: None) -> AsyncIterator[Delta]:
        """The model's deltas from one replica, with failover (see the module's doc). `buffered`: the caller sends
        nothing before the final delta (a non-streamed request), so a failure at any point is retried elsewhere.
        `on_produced(delta)` sees every delta as the replica produces it, buffered or not (what a client that leaves
        is billed for), and `on_produced(None)` when an attempt starts over on another replica. `whole`: the backend
        sends the output in one response (llmaas.router.triton), for a buffered caller that needs no per-token
        counts."""
        tried: set[str] = set()
        while True:
            address = self.pick(endpoints, model, tried) if len(tried) < MAX_ATTEMPTS else None
            if address is None:
                raise model_unavailable(public_model or model, self.retry_after(endpoints, model))
            if tried:
                on_produced(None)
            tried.add(address)
            sent = False
            try:
                # Closed as soon as this ends (cancelled, closed by the caller): the Triton request stops at once.
                async with aclosing(self._counted(address, model, prompt, sampling, request_id,
                                                  on_produced, whole=whole and buffered, images=images)) as stream:
                    if buffered:
                        deltas = [d async for d in stream]
                    else:
                        async for delta in stream:
                            sent = True
                            yield delta
                if buffered:
                    sent = True
                    for delta in deltas:
                        yield delta
                return
            except ReplicaFailure as failure:
                self.report_failure(address, model, failure)
                if sent:  # part of a stream reached the client: it cannot be replayed elsewhere
                    raise ApiError(grpc.StatusCode.UNAVAILABLE, "The model's backend failed while generating the "
                                   "response.", code="backend_unavailable") from None

    async def infer(self, address: str, request, timeout: float, metadata=()):
        """One unary ModelInfer on `address`, counted among its outstanding requests (llmaas.router.unary)."""
        replica = self.replica(address)
        self._outstanding[address] += 1
        try:
            return await replica.infer(request, timeout, metadata)
        finally:
            self._outstanding[address] -= 1

    async def _counted(self, address: str, model: str, prompt: str, sampling: dict, request_id: str,
                       on_produced: Callable[[Delta | None], None], *, whole: bool,
                       images: tuple[bytes, ...] = ()) -> AsyncIterator[Delta]:
        replica = self.replica(address)
        self._outstanding[address] += 1
        try:
            generation = (replica.generate(model, prompt, sampling, request_id, whole=whole, images=images) if images
                          else replica.generate(model, prompt, sampling, request_id, whole=whole))
            async with aclosing(generation) as deltas:
                async for delta in deltas:
                    on_produced(delta)
                    yield delta
        finally:
            self._outstanding[address] -= 1

    async def close(self) -> None:
        for task in list(self._probes):
            task.cancel()
        for replica in self._replicas.values():
            await replica.close()
