"""Behavioural layer: a short window of each tenant's (and end user's) recent prompts, rescanned together to catch an
attack split across requests ("ignore" now, "previous instructions" next), and a count of identical consecutive
prompts.

Repetition is rate-aware and a finding, not a block: self-consistency sampling, retries, health probes and batch
jobs send the same prompt many times. Only `repetition_limit` identical consecutive prompts within
`repetition_seconds` count (a burst), and their finding scores `repetition_score` (0.3 by default, under the default
threshold 0.5), so that repetition alone never refuses a request under the default policy; it adds to other
findings (noisy OR) and shows in the verdict's findings and trace. An operator who wants the reference's block sets
LLMAAS_GUARD_REPETITION_SCORE to 0.9.

The window holds, per key and for WINDOW_SECONDS, a digest of each recent prompt and a sketch of its end: only the
words attack patterns are made of, every other word replaced by a dot (patterns.sketch), never the prompt itself.
It lives in memory by default; with several guard replicas, in Redis.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Protocol

from llmaas.guard import normalize, patterns
from llmaas.guard.rules import Finding

WINDOW_SECONDS = 900
SPLIT_WINDOW = 4  # previous prompts joined with the current one
TAIL_CHARS = 160
MAX_KEYS = 100_000
_SPLIT_REASONS = frozenset({"instruction_override", "system_prompt_extraction", "persona_override"})
# A longer prompt is represented by its head and tail this long, and its length: the window only needs its digest,
# its head and its end, and normalising all of a huge prompt would cost what the analysis budget saves.
BOUNDED_CHARS = 4096


REPETITION_SECONDS = 60.0
REPETITION_SCORE = 0.3


@dataclass(frozen=True)
class BehaviourConfig:
    repetition_limit: int = 30
    repetition_seconds: float = REPETITION_SECONDS
    repetition_score: float = REPETITION_SCORE
    split_window: int = SPLIT_WINDOW
    ttl_seconds: float = WINDOW_SECONDS


class WindowStore(Protocol):
    async def push(self, key: str, entry: str, keep: int, ttl: float) -> list[str]:
        """Appends entry to key's window (keeping the newest `keep`) and returns the window as it was before,
        oldest first."""
        ...


class MemoryWindow:
    """One process's windows, least recently used keys dropped beyond MAX_KEYS."""

    def __init__(self, max_keys: int = MAX_KEYS) -> None:
        self._windows: OrderedDict[str, tuple[float, deque[str]]] = OrderedDict()
        self._max_keys = max_keys

    async def push(self, key: str, entry: str, keep: int, ttl: float) -> list[str]:
        now = time.monotonic()
        expires, window = self._windows.pop(key, (0.0, None))
        if window is None or expires < now:
            window = deque(maxlen=keep)
        before = list(window)
        window.append(entry)
        self._windows[key] = (now + ttl, window)
        while len(self._windows) > self._max_keys:
            self._windows.popitem(last=False)
        return before


class RedisWindow:
    """Windows shared by every guard replica: one Redis list per key, trimmed and expiring, updated atomically."""

    def __init__(self, client, prefix: str = "llmaas:guard:window:") -> None:
        self._redis = client
        self._prefix = prefix

    async def push(self, key: str, entry: str, keep: int, ttl: float) -> list[str]:
        name = self._prefix + key
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.lrange(name, 0, -1)
            pipe.rpush(name, entry)
            pipe.ltrim(name, -keep, -1)
            pipe.expire(name, max(1, int(ttl)))
            before, *_ = await pipe.execute()
        return [b.decode() if isinstance(b, bytes) else b for b in before]


def window_key(tenant_id: str, end_user_id: str) -> str:
    return f"{tenant_id}\x1f{end_user_id}"


class Behaviour:
    def __init__(self, store: WindowStore, config: BehaviourConfig = BehaviourConfig()) -> None:
        self._store = store
        self._config = config

    async def observe(self, tenant_id: str, end_user_id: str, prompt: str, form: str | None = None) -> list[Finding]:
        """Records the request's newest user prompt and returns the behavioural findings it completes. form: the
        prompt's comparison form, when the caller has it (the rules need it too): only used for a prompt of at most
        2 * BOUNDED_CHARS characters."""
        if len(prompt) > 2 * BOUNDED_CHARS:
            head = normalize.comparison_form(prompt[:BOUNDED_CHARS])
            tail = normalize.comparison_form(prompt[-BOUNDED_CHARS:])
            form = f"{head} \u2026 {tail}"
            digest = hashlib.sha256(f"{len(prompt)}\n{form}".encode()).hexdigest()[:16]
        else:
            if form is None:
                form = normalize.comparison_form(prompt)
            digest = hashlib.sha256(form.encode()).hexdigest()[:16]
        keep = max(self._config.repetition_limit, self._config.split_window)
        now = time.time()  # wall clock: replicas share the window (Redis)
        entry = f"{digest}@{now:.2f}\t{patterns.sketch(form[-TAIL_CHARS:])}"
        before = await self._store.push(window_key(tenant_id, end_user_id), entry, keep, self._config.ttl_seconds)
        findings = []
        if _repeats(before, digest, now - self._config.repetition_seconds) + 1 >= self._config.repetition_limit:
            findings.append(Finding("behaviour", "repetition_abuse", self._config.repetition_score))
        tails = [e.partition("\t")[2] for e in before[-self._config.split_window:]]
        if tails:
            findings += _split_attack(tails, form[:TAIL_CHARS * 2])
        return findings


def _repeats(before: list[str], digest: str, since: float) -> int:
    """How many of the newest entries are the same prompt, each sent after `since`."""
    count = 0
    for entry in reversed(before):
        head = entry.partition("\t")[0]
        same, _, sent = head.partition("@")
        if same != digest or not sent or float(sent) < since:
            break
        count += 1
    return count


def _reasons(text: str) -> set[str]:
    return patterns.reasons(text, _SPLIT_REASONS)


@functools.lru_cache(maxsize=4096)
def _tail_reasons(tail: str) -> frozenset[str]:
    """A stored tail's reasons, which the next SPLIT_WINDOW prompts of its window ask again. Tails are sketches (the
    patterns' own words and dots, never prompt text), as the window stores them."""
    return frozenset(_reasons(tail))


def _split_attack(tails: list[str], head: str) -> list[Finding]:
    joined = _reasons(" ".join([*tails, head]))
    if not joined:
        return []
    alone = _reasons(head).union(*(_tail_reasons(t) for t in tails))
    return [Finding("behaviour", "split_attack", 0.85)] if joined - alone else []
