"""A circuit breaker for one Triton replica, or for one model on one replica.

closed: in rotation. A failure opens it: out of rotation for a cool-down (0.5 s, doubling with each failure in a row,
at most 8 s). Then it is half-open: still out of rotation for client requests, while a probe (the replica's or the
model's readiness, llmaas.router.replicas) decides: ready closes it, anything else opens it again for a longer
cool-down. Probing instead of letting a client request through keeps every client request away from a replica that
has not proved itself again.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from enum import Enum

FIRST_COOL_DOWN = 0.5
MAX_COOL_DOWN = 8.0


class State(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class Breaker:
    failures: int = 0  # in a row; 0 when closed
    open_until: float = 0.0  # monotonic time the cool-down ends
    probing: bool = False  # a half-open probe is under way
    # Set to probe before the cool-down ends (the catalog lists the replica as ready again).
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    last_probe: float = 0.0

    def state(self, now: float | None = None) -> State:
        if self.failures == 0:
            return State.CLOSED
        return State.OPEN if (now if now is not None else time.monotonic()) < self.open_until else State.HALF_OPEN

    @property
    def closed(self) -> bool:
        return self.failures == 0

    def fail(self, now: float | None = None) -> None:
        now = now if now is not None else time.monotonic()
        self.failures += 1
        self.open_until = now + min(MAX_COOL_DOWN, FIRST_COOL_DOWN * 2 ** (self.failures - 1))

    def succeed(self) -> None:
        self.failures = 0
        self.open_until = 0.0
        self.probing = False

    def seconds_left(self, now: float | None = None) -> float:
        return max(0.0, self.open_until - (now if now is not None else time.monotonic()))
