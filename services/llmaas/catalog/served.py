"""Which Triton replicas serve which models right now, asked of every replica, and the recovery of a model whose
instance died.

The routing table: pools (llmaas.catalog.pools) map each catalogue entry's `pool` to its Triton replicas. Every
POLL_SECONDS each replica is asked for its repository index and, for each model the index calls READY, for the
model's own readiness (Triton's ModelReady: the index still says READY when a Python backend's stub has died). A
model is served where both say yes. `watch()` polls in the background, so a change is noticed without a request: a
new served set calls `on_change` (the catalog moves its revision, llmaas.catalog.watch, which invalidates the
router's cache).

Recovery: a model that was ready on a replica and no longer is (its load failed, it was unloaded) is reloaded there
through Triton's model repository API (unload, then load), again and again with a growing pause (1 s doubling to
30 s), for as long as the catalogue still references it. A model whose instance died is another case: when a Python
backend's stub process dies, Triton's index and ModelReady keep saying READY while every request fails ("Stub process
... is not healthy"), and a request in flight never ends. The router notices (its requests fail, or a silent stream's
canary does) and reports it (`report`): the model is out of the served set on that replica at once, and reloaded the
same way. Out of the served set means out of /v1/models, and requests for a model with no replica left get a 503
`model_unavailable` with Retry-After (llmaas.catalog.servicer).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import grpc

from llmaas.catalog.entries import ModelEntry
from llmaas.catalog.pools import Pools
from llmaas.common.errors import ApiError
from llmaas.common.triton_client import triton_client

log = logging.getLogger("llmaas.catalog.served")

POLL_SECONDS = 1.0
FIRST_POLL_SECONDS = 0.2
# A replica that does not answer within this is down for this poll (the others are not held up).
ANSWER_TIMEOUT = 2.0
FIRST_RELOAD_PAUSE = 1.0
# How long a reload waits for Triton to begin unloading a model before loading it again.
UNLOAD_TIMEOUT = 5.0
# A repository call (unload, load: a large model takes a while) that has not answered by then is given up, and the
# reload tried again later.
REPOSITORY_CALL_TIMEOUT = 300.0
# Reports that arrive this soon after a reload are about the instance it replaced (a canary sent to the dead
# instance answers about 1 s later); a crash of the new instance this early is reported again by the router's next
# probe.
REPORT_GRACE_SECONDS = 1.5
MAX_RELOAD_PAUSE = 30.0


@dataclass(frozen=True)
class Snapshot:
    """The served set at one moment."""

    pools: Pools
    # Replica address -> the Triton models ready there.
    ready: Mapping[str, frozenset[str]]
    # Triton models that were ready on some replica since the catalog started, or that an index lists in another
    # state (loading, failed): deployed here, whether or not they answer right now.
    deployed: frozenset[str] = frozenset()

    def replicas(self, entry: ModelEntry) -> tuple[str, ...]:
        """The replicas of the entry's pool that serve it now."""
        if not entry.triton_model:
            return ()
        return tuple(a for a in self.pools.replicas(entry.pool) if entry.triton_model in self.ready.get(a, ()))

    def served(self, entry: ModelEntry) -> bool:
        return bool(self.replicas(entry))

    def down(self, entry: ModelEntry) -> bool:
        """Deployed on its pool, but no replica serves it now (crashed, reloading, every replica unreachable)."""
        return bool(entry.triton_model) and entry.triton_model in self.deployed and not self.served(entry)

    def served_models(self) -> frozenset[str]:
        return frozenset().union(*self.ready.values()) if self.ready else frozenset()


@dataclass
class _Reload:
    """The recovery of one model on one replica."""

    attempts: int = 0
    next_at: float = 0.0
    task: asyncio.Task | None = field(default=None, repr=False)


class ServedModels:
    def __init__(self, pools: Pools, *, on_change: Callable[[], None] | None = None,
                 client_factory: Callable[[str], object] = triton_client,
                 wanted: Callable[[], frozenset[str]] = frozenset) -> None:
        """`wanted()`: the Triton models the catalogue in force references (only those are ever reloaded)."""
        self._pools = pools
        self._clients = {address: client_factory(address) for address in pools.addresses()}
        self._on_change = on_change
        self._wanted = wanted
        self._snapshot = Snapshot(pools, {})
        self._ever_ready: dict[str, set[str]] = {a: set() for a in self._clients}
        self._reloads: dict[tuple[str, str], _Reload] = {}
        # (replica, model) reported dead and not yet reloaded: not served there, whatever Triton says.
        self._dead: set[tuple[str, str]] = set()
        self._reloaded_at: dict[tuple[str, str], float] = {}
        self._known = asyncio.Event()  # set once some replica has answered
        self._down: set[str] = set()  # replicas that did not answer the last poll (logged once per outage)
        self._expires = 0.0
        self._lock = asyncio.Lock()

    async def snapshot(self) -> Snapshot:
        """The served set, at most POLL_SECONDS old. UNAVAILABLE while no replica has ever answered."""
        if time.monotonic() >= self._expires:
            async with self._lock:
                if time.monotonic() >= self._expires:
                    await self._poll()
        if not self._known.is_set():
            raise ApiError(grpc.StatusCode.UNAVAILABLE, "The inference backend is temporarily unavailable",
                           code="backend_unavailable")
        return self._snapshot

    async def _poll(self) -> None:
        answers = await asyncio.gather(*(self._ask(a, c) for a, c in self._clients.items()))
        ready: dict[str, frozenset[str]] = {}
        listed: set[str] = set()
        for address, answer in zip(self._clients, answers, strict=True):
            if answer is None:
                continue
            ready[address], in_index = answer
            ready[address] = frozenset(m for m in ready[address] if (address, m) not in self._dead)
            listed |= in_index
            self._ever_ready[address] |= ready[address]
            self._recover(address, ready[address])
        self._expires = time.monotonic() + POLL_SECONDS
        if not ready and not self._known.is_set():
            return
        deployed = frozenset(listed).union(*self._ever_ready.values())
        self._publish(Snapshot(self._pools, ready, deployed))

    def _publish(self, snapshot: Snapshot) -> None:
        previous, self._snapshot = self._snapshot, snapshot
        changed = self._known.is_set() and previous.ready != snapshot.ready
        self._known.set()
        if changed:
            log.info("served models changed", extra={"fields": {
                "replicas": {a: sorted(m) for a, m in sorted(snapshot.ready.items())}}})
            if self._on_change is not None:
                self._on_change()

    def report(self, address: str, model: str) -> bool:
        """A model's instance on a replica died (the router saw it): out of the served set there now, reloaded in
        the background. False (nothing done) for a replica or model this catalog does not serve."""
        if address not in self._clients or model not in self._ever_ready[address] or model not in self._wanted():
            return False
        if time.monotonic() - self._reloaded_at.get((address, model), -1e9) < REPORT_GRACE_SECONDS:
            return True  # about the instance a reload just replaced (a probe that failed before it was ready)
        if (address, model) not in self._dead:
            self._dead.add((address, model))
            log.warning("model instance reported dead", extra={"fields": {"replica": address, "model": model}})
            ready = dict(self._snapshot.ready)
            ready[address] = ready.get(address, frozenset()) - {model}
            self._publish(Snapshot(self._pools, ready, self._snapshot.deployed))
        self._recover(address, self._snapshot.ready.get(address, frozenset()))
        return True

    async def _ask(self, address: str, client) -> tuple[frozenset[str], frozenset[str]] | None:
        """(models ready, models listed in any state) on one replica; None when it does not answer."""
        try:
            index = await asyncio.wait_for(client.get_model_repository_index(as_json=True), ANSWER_TIMEOUT)
            listed = [m["name"] for m in index.get("models", [])]
            candidates = [m["name"] for m in index.get("models", []) if m.get("state") == "READY"]
            checks = await asyncio.wait_for(
                asyncio.gather(*(client.is_model_ready(name) for name in candidates)), ANSWER_TIMEOUT)
        except Exception as e:  # tritonclient raises its own exception type for every failure; timeouts too
            if address not in self._down:
                log.warning("triton replica does not answer", extra={"fields": {
                    "replica": address, "error": str(e)[:200] or type(e).__name__}})
            self._down.add(address)
            return None
        if address in self._down:
            log.info("triton replica answers again", extra={"fields": {"replica": address}})
            self._down.discard(address)
        return frozenset(n for n, ok in zip(candidates, checks, strict=True) if ok), frozenset(listed)

    def _recover(self, address: str, ready: frozenset[str]) -> None:
        """Reloads the models that were ready on this replica and no longer are (the replica itself answers)."""
        wanted = self._wanted()
        for model in ready:
            self._reloads.pop((address, model), None)
        now = time.monotonic()
        for model in self._ever_ready[address] - ready:
            if model not in wanted:
                continue
            reload = self._reloads.setdefault((address, model), _Reload())
            if (reload.task is None or reload.task.done()) and now >= reload.next_at:
                reload.task = asyncio.create_task(self._reload(address, model, reload))

    async def _reload(self, address: str, model: str, reload: _Reload) -> None:
        reload.attempts += 1
        reload.next_at = time.monotonic() + min(MAX_RELOAD_PAUSE, FIRST_RELOAD_PAUSE * 2 ** (reload.attempts - 1))
        client = self._clients[address]
        log.warning("model not ready on its replica: reloading", extra={"fields": {
            "replica": address, "model": model, "attempt": reload.attempts}})
        started = time.monotonic()
        try:
            # Unload first: loading a model Triton still counts as loaded does nothing (its dead instance stays). The
            # unload of a dead instance never finishes (state UNLOADING), but once it has begun a load starts a new
            # instance.
            try:
                await asyncio.wait_for(client.unload_model(model), REPOSITORY_CALL_TIMEOUT)
                await asyncio.wait_for(self._unloaded(client, model), REPOSITORY_CALL_TIMEOUT)
            except Exception:  # noqa: BLE001 - already unloaded, or its unload failed: the load decides
                pass
            await asyncio.wait_for(client.load_model(model), REPOSITORY_CALL_TIMEOUT)
            self._dead.discard((address, model))
            self._reloaded_at[(address, model)] = time.monotonic()
        except Exception as e:  # noqa: BLE001 - the next poll tries again after the pause
            log.error("model reload failed", extra={"fields": {
                "replica": address, "model": model, "attempt": reload.attempts, "error": str(e)[:300]}})
            return
        log.info("model reloaded", extra={"fields": {
            "replica": address, "model": model, "seconds": round(time.monotonic() - started, 2)}})
        self._expires = 0.0  # look again now rather than at the next poll

    @staticmethod
    async def _unloaded(client, model: str) -> None:
        deadline = time.monotonic() + UNLOAD_TIMEOUT
        while time.monotonic() < deadline:
            index = await client.get_model_repository_index(as_json=True)
            states = [m.get("state") for m in index.get("models", []) if m.get("name") == model]
            if "READY" not in states:
                return
            await asyncio.sleep(0.1)

    def incidents(self) -> tuple[frozenset[str], frozenset[tuple[str, str]]]:
        """Now: the replicas that did not answer the last poll, and the (replica, Triton model) pairs where a model
        that was ready is not (reported dead, its reload pending or running) on a replica that answers."""
        reloading = frozenset(k for k in (*self._reloads, *self._dead) if k[0] not in self._down)
        return frozenset(self._down), reloading

    async def known(self) -> None:
        """Returns once a replica has answered: before, every request would be UNAVAILABLE."""
        await self._known.wait()

    async def watch(self, interval: float | None = None) -> None:
        while True:
            try:
                await self.snapshot()
            except ApiError:
                pass  # logged once per outage; requests meanwhile get UNAVAILABLE
            # Until Triton first answers, ask again soon: the service is not healthy before.
            await asyncio.sleep((interval or POLL_SECONDS) if self._known.is_set() else FIRST_POLL_SECONDS)

    async def close(self) -> None:
        for reload in self._reloads.values():
            if reload.task is not None:
                reload.task.cancel()
        for client in self._clients.values():
            await client.close()
