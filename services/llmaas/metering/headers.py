"""What a client sees of its limits: OpenAI's x-ratelimit-* headers, Retry-After and the 429 message.

For requests and for tokens, the headers describe the window with the least room left among those that apply (a key
quota, the tier's minute/hour/day). Remaining counts reservations in flight, so it decreases with every request
admitted; Reset is the time until that window ends, in OpenAI's duration format ("1s", "6m0s", "1h2m3s").
"""

from __future__ import annotations

import datetime as dt
import math

from llmaas.metering.ledger import Decision, Window
from llmaas.metering.pricing import format_eur


def duration(seconds: float) -> str:
    s = max(0, math.ceil(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    if h:
        return f"{h}h{m}m{s}s"
    if m:
        return f"{m}m{s}s"
    return f"{s}s"


def _room(w: Window, kind: str) -> tuple[int, int] | None:
    """(limit, remaining) of a window for requests or tokens, None if it does not limit them."""
    lim = w.limit
    if kind == "requests":
        return (lim.max_requests, lim.max_requests - w.requests) if lim.max_requests is not None else None
    if lim.max_tokens is not None:
        return lim.max_tokens, lim.max_tokens - w.tokens
    if lim.max_output is not None:
        return lim.max_output, lim.max_output - w.output_tokens
    return None


def rate_limit_headers(decision: Decision, now: dt.datetime) -> list[tuple[str, str]]:
    headers: list[tuple[str, str]] = []
    t = now.timestamp()
    for kind in ("requests", "tokens"):
        candidates = [(room[1], w.limit.end, room[0]) for w in decision.windows if (room := _room(w, kind))]
        if not candidates:
            continue
        remaining, end, limit = min(candidates)
        headers += [(f"x-ratelimit-limit-{kind}", str(limit)),
                    (f"x-ratelimit-remaining-{kind}", str(max(0, remaining))),
                    (f"x-ratelimit-reset-{kind}", duration(end - t))]
    return headers


def retry_after(decision: Decision, now: dt.datetime) -> int:
    assert decision.refused_by is not None
    return max(1, math.ceil(decision.refused_by.limit.end - now.timestamp()))


def refusal_message(decision: Decision, now: dt.datetime) -> str:
    w = decision.refused_by
    assert w is not None
    c, lim, wait = decision.charge, w.limit, duration(retry_after(decision, now))
    if decision.exhausted == "budget":
        return (f"Rate limit exceeded: this request could cost up to {format_eur(c.cost_nano)} EUR and the "
                f"{lim.label} of {format_eur(lim.max_cost or 0)} EUR has {format_eur(w.cost_nano)} EUR charged. "
                f"Please upgrade your tier or try again in {wait}.")
    if decision.exhausted == "requests":
        return (f"Rate limit exceeded: {w.requests}/{lim.max_requests} requests {lim.label}. "
                f"Please try again in {wait}.")
    if decision.exhausted == "tokens":
        return (f"Rate limit exceeded: {w.tokens}/{lim.max_tokens} tokens {lim.label}, this request needs up to "
                f"{c.tokens} (input + max_tokens). Please reduce max_tokens or try again in {wait}.")
    return (f"Rate limit exceeded: {w.output_tokens}/{lim.max_output} {lim.label}, this request needs up to "
            f"{c.output_tokens} (max_tokens). Please reduce max_tokens, upgrade your tier or try again in {wait}.")
