"""The usage ledger and the limits: reservations before dispatch, idempotent settlements after.

Why SQL and not Redis for the limits: the budget is money, and a reservation must be in the ledger exactly when it
is counted against the limits. One SQL transaction does both (insert the request's row, increment every window it
touches with a conditional UPDATE, or roll everything back), so a crash can never leave a charge without its ledger
row or the reverse, and the counters survive a restart like the ledger does. Redis would be a second store to keep in
step with the ledger (and an in-memory one in tests). The cost is one short write transaction per reserve and per
settle; bench/metering.py measures it.

How a reservation never overshoots, across any number of metering replicas:
- every window (key quota slot, tenant minute/hour/day/month) is a row of `limit_window`;
- Reserve, in one transaction: insert the request row (idempotent by request id), create the window rows if missing
  (`INSERT ... ON CONFLICT DO NOTHING`, same SQL on both engines), then, in a fixed order (no deadlocks),
  `UPDATE limit_window SET tokens = tokens + :n ... WHERE ... AND tokens + :n <= :limit`. A row count of 0 means
  refused: the transaction rolls back and nothing was charged. SQLite runs one writer at a time (the first statement
  is a write, so the lock is taken before anything is read); PostgreSQL locks the row and re-checks the WHERE on the
  latest version (READ COMMITTED), so two replicas can never both take the last slot.
- the worst case is charged (input bound + max_tokens; cost at those bounds); Settle replaces it by the real usage in
  the same windows (even after the window ended) and releases the rest, once: the conditional
  `UPDATE usage SET settled_at = ... WHERE settled_at IS NULL` is the idempotency check.
- a settlement never exceeds its reservation: usage above the reserved input, output (and audio) bounds is capped
  to them, recorded as the reservation, and the excess returned (`Settlement.excess`) for the caller to log and
  report. A settler that claims more than it reserved is wrong (or hostile): it must not be able to charge a tenant
  more than the limits admitted, nor lock it out by its hourly limit.

What each window counts: a key quota's max_requests and max_tokens (input + output tokens); the tier's
requests_per_minute, output tokens per hour and per day; the month's cost against the monthly budget.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal

import sqlalchemy as sa

from llmaas.common.identity import Quota
from llmaas.metering import tiers as tw
from llmaas.metering.pricing import PriceTable, Usage, cost_nano, energy_uwh, worst_case_nano
from llmaas.metering.tables import limit_window, tenant_tier, usage
from llmaas.metering.tiers import Tier, Tiers

OUTCOMES = ("completed", "failed", "cancelled", "expired")


@dataclass(frozen=True)
class Totals:
    requests: int  # served (completed) only
    prompt_tokens: int
    completion_tokens: int


class UnknownReservation(Exception):
    pass


class UnknownTier(ValueError):
    pass


class _Refused(Exception):
    def __init__(self, limit: Limit) -> None:
        self.limit = limit


@dataclass(frozen=True)
class Reservation:
    request_id: str
    tenant_id: str
    key_id: str
    model: str
    max_input_tokens: int
    max_output_tokens: int
    kind: str = "chat"
    max_audio_ms: int = 0
    quotas: tuple[Quota, ...] = ()
    kwh_per_million: Decimal | None = None


@dataclass(frozen=True)
class Limit:
    """One window and what it checks (None: not checked)."""
    scope: str
    start: int
    end: int
    label: str  # for messages: "per 60s for this key", "per hour for this tenant", ...
    max_requests: int | None = None
    max_tokens: int | None = None
    max_output: int | None = None
    max_cost: int | None = None


@dataclass(frozen=True)
class Charge:
    requests: int
    tokens: int
    output_tokens: int
    cost_nano: int


@dataclass(frozen=True)
class Window:
    """A window's counters (reservations in flight included) and its limits."""
    limit: Limit
    requests: int = 0
    tokens: int = 0
    output_tokens: int = 0
    cost_nano: int = 0


@dataclass(frozen=True)
class Decision:
    granted: bool
    charge: Charge
    windows: tuple[Window, ...] = ()
    # When refused: the first window that could not take the charge, and what ran out.
    refused_by: Window | None = None
    exhausted: str = ""  # requests, tokens, output_tokens, budget
    replay: bool = False  # a retried Reserve of a request id already reserved


@dataclass(frozen=True)
class Settlement:
    recorded: bool
    tenant_id: str = ""
    key_id: str = ""
    model: str = ""
    kind: str = ""
    usage: Usage = field(default_factory=Usage)
    cost_nano: int = 0
    energy_uwh: int = 0
    # What the settlement claimed above the reservation, refused (all zero: within it).
    excess: Usage = field(default_factory=Usage)

    @property
    def capped(self) -> bool:
        return self.excess != Usage()


@dataclass(frozen=True)
class UsageRow:
    """Settled requests by outcome: `requests` counts the served ones (completed); tokens, cost and energy are those
    of every settled request (a failed or cancelled request is billed for the work done until it ended)."""
    group: dict[str, str]
    requests: int
    prompt_tokens: int
    completion_tokens: int
    reasoning_tokens: int
    audio_ms: int
    cost_nano: int
    energy_uwh: int
    failed_requests: int = 0
    cancelled_requests: int = 0
    expired_requests: int = 0


GROUPS = {"tenant": usage.c.tenant_id, "key": usage.c.key_id, "model": usage.c.model, "day": usage.c.day,
          "month": usage.c.month, "kind": usage.c.kind}


def _aware(when: dt.datetime) -> dt.datetime:
    # SQLite hands back naive datetimes; everything written here is UTC.
    return when if when.tzinfo is not None else when.replace(tzinfo=dt.UTC)


def _insert_ignore(conn: sa.Connection, table: sa.Table, **values) -> int:
    """INSERT ... ON CONFLICT DO NOTHING: the same SQL on SQLite and PostgreSQL. Returns the rows inserted."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        from sqlalchemy.dialects.sqlite import insert
    return conn.execute(insert(table).values(**values).on_conflict_do_nothing()).rowcount


# The hot path's statements, written once as plain SQL that SQLite (3.35+) and PostgreSQL both run as is
# (ON CONFLICT DO NOTHING, RETURNING): building SQLAlchemy expressions per call cost more than the database work.
_TS = sa.DateTime(timezone=True)
_INSERT_USAGE = sa.text(
    "INSERT INTO usage (request_id, tenant_id, key_id, model, kind, reserved_input_tokens, reserved_output_tokens,"
    " reserved_audio_ms, reserved_cost_nano, kwh_per_million, windows, reserved_at, day, month)"
    " VALUES (:request_id, :tenant_id, :key_id, :model, :kind, :max_in, :max_out, :max_audio, :cost, :kwh, :windows,"
    " :reserved_at, :day, :month) ON CONFLICT DO NOTHING").bindparams(sa.bindparam("reserved_at", type_=_TS))
_INSERT_WINDOW = sa.text(
    "INSERT INTO limit_window (scope, window_start, window_end, requests, tokens, output_tokens, cost_nano)"
    " VALUES (:scope, :start, :end, 0, 0, 0, 0) ON CONFLICT DO NOTHING")
_SELECT_WINDOW = sa.text("SELECT requests, tokens, output_tokens, cost_nano FROM limit_window"
                         " WHERE scope = :scope AND window_start = :start")
_ADJUST_WINDOW = sa.text(
    "UPDATE limit_window SET requests = requests + :r, tokens = tokens + :t, output_tokens = output_tokens + :o,"
    " cost_nano = cost_nano + :c WHERE scope = :scope AND window_start = :start")
_CLAIM = sa.text(
    "UPDATE usage SET settled_at = :now WHERE request_id = :id AND settled_at IS NULL RETURNING tenant_id, key_id,"
    " model, kind, reserved_input_tokens, reserved_output_tokens, reserved_audio_ms, reserved_cost_nano,"
    " kwh_per_million, windows, reserved_at").bindparams(sa.bindparam("now", type_=_TS))
_EXISTS = sa.text("SELECT 1 FROM usage WHERE request_id = :id")
_RECORD = sa.text(
    "UPDATE usage SET prompt_tokens = :p, completion_tokens = :c, reasoning_tokens = :r, audio_ms = :a,"
    " cost_nano = :cost, energy_uwh = :energy, outcome = :outcome WHERE request_id = :id")
TIER_CACHE_SECONDS = 5.0


@functools.cache
def _update_window(requests: bool, tokens: bool, output: bool, cost: bool) -> sa.TextClause:
    """Charges a window, only if it stays within the limits checked; returns its new counters (no row: refused)."""
    checks = "".join(clause for on, clause in (
        (requests, " AND requests + :r <= :max_r"), (tokens, " AND tokens + :t <= :max_t"),
        (output, " AND output_tokens + :o <= :max_o"), (cost, " AND cost_nano + :c <= :max_c")) if on)
    return sa.text(
        "UPDATE limit_window SET requests = requests + :r, tokens = tokens + :t, output_tokens = output_tokens + :o,"
        " cost_nano = cost_nano + :c WHERE scope = :scope AND window_start = :start" + checks
        + " RETURNING requests, tokens, output_tokens, cost_nano")


def _within(claimed: Usage, row) -> Usage:
    """The usage capped at the reservation: input, output (reasoning is part of the output) and audio bounds. The
    cost of the result never exceeds the reserved cost (same prices, within the bounds it was computed from)."""
    completion = min(claimed.completion_tokens, row.reserved_output_tokens)
    return Usage(min(claimed.prompt_tokens, row.reserved_input_tokens), completion,
                 min(claimed.reasoning_tokens, completion), min(claimed.audio_ms, row.reserved_audio_ms))


def _as_datetime(value) -> dt.datetime:
    # SQLite hands back text (or a naive datetime); PostgreSQL an aware datetime. Everything written here is UTC.
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return _aware(value)


def plan(r: Reservation, tier: Tier, now: dt.datetime) -> list[Limit]:
    """Every window a request is charged to, in lock order."""
    limits: list[Limit] = []
    by_window: dict[int, list[Quota]] = {}
    for q in r.quotas:
        if q.window_seconds > 0 and (q.max_requests > 0 or q.max_tokens > 0):
            by_window.setdefault(q.window_seconds, []).append(q)
    for seconds, quotas in by_window.items():
        start, end = tw.slot_window(now, seconds)
        reqs = [q.max_requests for q in quotas if q.max_requests > 0]
        toks = [q.max_tokens for q in quotas if q.max_tokens > 0]
        limits.append(Limit(f"key:{r.key_id}:{seconds}s", start, end, f"per {seconds}s for this API key",
                            max_requests=min(reqs) if reqs else None, max_tokens=min(toks) if toks else None))
    t = r.tenant_id
    if tier.requests_per_minute:
        start, end = tw.slot_window(now, 60)
        limits.append(Limit(f"tenant:{t}:minute", start, end, f"per minute ({tier.name})",
                            max_requests=tier.requests_per_minute))
    if tier.output_tokens_per_hour:
        start, end = tw.hour_window(now)
        limits.append(Limit(f"tenant:{t}:hour", start, end, f"output tokens per hour ({tier.name})",
                            max_output=tier.output_tokens_per_hour))
    if tier.output_tokens_per_day:
        start, end = tw.day_window(now)
        limits.append(Limit(f"tenant:{t}:day", start, end, f"output tokens per day ({tier.name})",
                            max_output=tier.output_tokens_per_day))
    start, end = tw.month_window(now)  # always: the month's spend, budget or not
    limits.append(Limit(f"tenant:{t}:month", start, end, f"monthly budget ({tier.name})",
                        max_cost=tier.monthly_budget_nano))
    return sorted(limits, key=lambda w: (w.scope, w.start))


def _check(limit: Limit, c: Charge):
    """The WHERE clauses that keep a window within its limits once charged with c."""
    w = limit_window.c
    conds = []
    if limit.max_requests is not None:
        conds.append(w.requests + c.requests <= limit.max_requests)
    if limit.max_tokens is not None:
        conds.append(w.tokens + c.tokens <= limit.max_tokens)
    if limit.max_output is not None:
        conds.append(w.output_tokens + c.output_tokens <= limit.max_output)
    if limit.max_cost is not None:
        conds.append(w.cost_nano + c.cost_nano <= limit.max_cost)
    return conds


def _exhausted(window: Window, c: Charge) -> str:
    lim = window.limit
    if lim.max_requests is not None and window.requests + c.requests > lim.max_requests:
        return "requests"
    if lim.max_tokens is not None and window.tokens + c.tokens > lim.max_tokens:
        return "tokens"
    if lim.max_output is not None and window.output_tokens + c.output_tokens > lim.max_output:
        return "output_tokens"
    return "budget"


class Ledger:
    def __init__(self, engine: sa.Engine, prices: PriceTable, tiers: Tiers) -> None:
        self._engine = engine
        self.prices = prices
        self.tiers = tiers
        self._tier_cache: dict[str, tuple[float, Tier]] = {}

    # --- tiers ---------------------------------------------------------------------------------------------------

    def tenant_tier(self, tenant_id: str) -> tuple[Tier, bool]:
        """The tenant's effective tier (its own budget applied), and whether it was assigned (else the default)."""
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(tenant_tier.c.tier, tenant_tier.c.monthly_budget_nano)
                               .where(tenant_tier.c.tenant_id == tenant_id)).first()
        if row is None or row.tier not in self.tiers.by_id:
            return self.tiers.get(""), False
        return self.tiers.get(row.tier).with_budget(row.monthly_budget_nano), True

    def set_tenant_tier(self, tenant_id: str, tier_id: str, budget_nano: int | None, now: dt.datetime) -> Tier:
        if tier_id not in self.tiers.by_id:
            raise UnknownTier(tier_id)
        with self._engine.begin() as conn:
            values = {"tier": tier_id, "monthly_budget_nano": budget_nano, "updated_at": now}
            if not _insert_ignore(conn, tenant_tier, tenant_id=tenant_id, **values):
                conn.execute(tenant_tier.update().where(tenant_tier.c.tenant_id == tenant_id).values(**values))
        self._tier_cache.pop(tenant_id, None)
        return self.tiers.get(tier_id).with_budget(budget_nano)

    # --- reserve / settle ----------------------------------------------------------------------------------------

    def reserve(self, r: Reservation, now: dt.datetime) -> Decision:
        """Charges the worst case to every window, atomically, or refuses without charging anything."""
        tier = self._cached_tier(r.tenant_id)
        prices = self.prices.at(now)
        charge = Charge(1, r.max_input_tokens + r.max_output_tokens, r.max_output_tokens,
                        worst_case_nano(prices, r.kind, r.max_input_tokens, r.max_output_tokens, r.max_audio_ms))
        limits = plan(r, tier, now)
        try:
            with self._engine.begin() as conn:
                return self._charge(conn, r, charge, limits, now)
        except _Refused as e:
            refused = e.limit
        with self._engine.connect() as conn:
            windows = self._windows(conn, limits)
        by_scope = {(x.limit.scope, x.limit.start): x for x in windows}
        window = by_scope.get((refused.scope, refused.start), Window(refused))
        return Decision(False, charge, windows, refused_by=window, exhausted=_exhausted(window, charge))

    def _cached_tier(self, tenant_id: str) -> Tier:
        """The tenant's tier, read at most every TIER_CACHE_SECONDS (an assignment reaches every replica within that
        time; this replica sees its own at once)."""
        hit = self._tier_cache.get(tenant_id)
        if hit is not None and time.monotonic() - hit[0] < TIER_CACHE_SECONDS:
            return hit[1]
        tier, _ = self.tenant_tier(tenant_id)
        self._tier_cache[tenant_id] = (time.monotonic(), tier)
        return tier

    def _charge(self, conn: sa.Connection, r: Reservation, charge: Charge, limits: list[Limit],
                now: dt.datetime) -> Decision:
        # The first statement writes: on SQLite the write lock is taken before anything is read.
        inserted = conn.execute(_INSERT_USAGE, {
            "request_id": r.request_id, "tenant_id": r.tenant_id, "key_id": r.key_id, "model": r.model,
            "kind": r.kind, "max_in": r.max_input_tokens, "max_out": r.max_output_tokens,
            "max_audio": r.max_audio_ms, "cost": charge.cost_nano,
            "kwh": str(r.kwh_per_million) if r.kwh_per_million is not None else None,
            "windows": json.dumps([[lim.scope, lim.start] for lim in limits]), "reserved_at": now,
            "day": now.astimezone(dt.UTC).strftime("%Y-%m-%d"), "month": now.astimezone(dt.UTC).strftime("%Y-%m"),
        }).rowcount
        if not inserted:  # a retried Reserve: already charged once
            return Decision(True, charge, self._windows(conn, limits), replay=True)
        windows = []
        for lim in limits:
            stmt = _update_window(lim.max_requests is not None, lim.max_tokens is not None,
                                  lim.max_output is not None, lim.max_cost is not None)
            params = {"scope": lim.scope, "start": lim.start, "r": charge.requests, "t": charge.tokens,
                      "o": charge.output_tokens, "c": charge.cost_nano, "max_r": lim.max_requests,
                      "max_t": lim.max_tokens, "max_o": lim.max_output, "max_c": lim.max_cost}
            row = conn.execute(stmt, params).first()
            if row is None:  # a new window, or a full one
                conn.execute(_INSERT_WINDOW, {"scope": lim.scope, "start": lim.start, "end": lim.end})
                row = conn.execute(stmt, params).first()
                if row is None:
                    raise _Refused(lim)  # rolls the whole transaction back: nothing was charged
            windows.append(Window(lim, *row))
        return Decision(True, charge, tuple(windows))

    @staticmethod
    def _windows(conn: sa.Connection, limits: list[Limit]) -> tuple[Window, ...]:
        out = []
        for lim in limits:
            row = conn.execute(_SELECT_WINDOW, {"scope": lim.scope, "start": lim.start}).first()
            out.append(Window(lim, *row) if row else Window(lim))
        return tuple(out)

    def settle(self, request_id: str, used: Usage, outcome: str, now: dt.datetime) -> Settlement:
        """Writes the real usage once and corrects every window charged at reservation. recorded=False if the
        request was already settled (the earlier settlement stands)."""
        with self._engine.begin() as conn:
            row = conn.execute(_CLAIM, {"id": request_id, "now": now}).first()
            if row is None:
                if conn.execute(_EXISTS, {"id": request_id}).first() is None:
                    raise UnknownReservation(request_id)
                return Settlement(False)
            claimed = used
            used = _within(claimed, row)
            prices = self.prices.at(_as_datetime(row.reserved_at))
            cost = cost_nano(prices, row.kind, used)
            energy = energy_uwh(Decimal(row.kwh_per_million) if row.kwh_per_million else None, used.total_tokens)
            conn.execute(_RECORD, {"id": request_id, "p": used.prompt_tokens, "c": used.completion_tokens,
                                   "r": used.reasoning_tokens, "a": used.audio_ms, "cost": cost, "energy": energy,
                                   "outcome": outcome})
            # A request that ended without using anything gives its request slot back too.
            nothing_used = outcome != "completed" and used.total_tokens == 0 and used.audio_ms == 0
            deltas = {"r": -1 if nothing_used else 0,
                      "t": used.total_tokens - (row.reserved_input_tokens + row.reserved_output_tokens),
                      "o": used.completion_tokens - row.reserved_output_tokens, "c": cost - row.reserved_cost_nano}
            for scope, start in sorted(json.loads(row.windows)):
                conn.execute(_ADJUST_WINDOW, {"scope": scope, "start": start, **deltas})
        excess = Usage(claimed.prompt_tokens - used.prompt_tokens, claimed.completion_tokens - used.completion_tokens,
                       claimed.reasoning_tokens - used.reasoning_tokens, claimed.audio_ms - used.audio_ms)
        return Settlement(True, row.tenant_id, row.key_id, row.model, row.kind, used, cost, energy, excess)

    def expire(self, older_than: dt.datetime, now: dt.datetime, limit: int = 500) -> int:
        """Releases reservations never settled (a router that died mid-request): settled as `expired`, nothing billed.
        Returns how many."""
        with self._engine.connect() as conn:
            ids = conn.execute(sa.select(usage.c.request_id).where(
                usage.c.settled_at.is_(None), usage.c.reserved_at < older_than).limit(limit)).scalars().all()
        return sum(self.settle(i, Usage(), "expired", now).recorded for i in ids)

    def prune_windows(self, before_epoch: int) -> int:
        """Deletes limit windows that ended before `before_epoch` (their requests are settled or expired)."""
        with self._engine.begin() as conn:
            return conn.execute(limit_window.delete().where(limit_window.c.window_end < before_epoch)).rowcount

    def month_charged(self, tenant_id: str, now: dt.datetime) -> int:
        """This month's charge against the budget: settled costs plus the worst case of requests in flight."""
        start, _ = tw.month_window(now)
        w = limit_window.c
        with self._engine.connect() as conn:
            value = conn.execute(sa.select(w.cost_nano).where(w.scope == f"tenant:{tenant_id}:month",
                                                              w.window_start == start)).scalar()
        return int(value or 0)

    # --- queries -------------------------------------------------------------------------------------------------

    def usage(self, *, tenant_id: str = "", key_id: str = "", model: str = "", start_day: str = "",
              end_day: str = "", group_by: tuple[str, ...] = ()) -> list[UsageRow]:
        """Settled usage, summed per group (no group: one row, the total). Days are UTC, YYYY-MM-DD, inclusive."""
        c = usage.c
        cols = [GROUPS[g].label(g) for g in group_by]

        def outcome(name: str):
            return sa.func.coalesce(sa.func.sum(sa.case((c.outcome == name, 1), else_=0)), 0)

        query = sa.select(
            *cols, outcome("completed"), sa.func.coalesce(sa.func.sum(c.prompt_tokens), 0),
            sa.func.coalesce(sa.func.sum(c.completion_tokens), 0), sa.func.coalesce(sa.func.sum(c.reasoning_tokens), 0),
            sa.func.coalesce(sa.func.sum(c.audio_ms), 0), sa.func.coalesce(sa.func.sum(c.cost_nano), 0),
            sa.func.coalesce(sa.func.sum(c.energy_uwh), 0), outcome("failed"), outcome("cancelled"),
            outcome("expired"),
        ).where(c.settled_at.is_not(None))
        for column, value in ((c.tenant_id, tenant_id), (c.key_id, key_id), (c.model, model)):
            if value:
                query = query.where(column == value)
        if start_day:
            query = query.where(c.day >= start_day)
        if end_day:
            query = query.where(c.day <= end_day)
        if cols:
            query = query.group_by(*[GROUPS[g] for g in group_by]).order_by(*[GROUPS[g] for g in group_by])
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        out = []
        for row in rows:
            n = len(group_by)
            values = [int(v) for v in row[n:]]
            out.append(UsageRow({g: str(row[i] or "") for i, g in enumerate(group_by)}, *values))
        return out

    def totals(self, tenant_id: str, key_id: str = "") -> Totals:
        row = self.usage(tenant_id=tenant_id, key_id=key_id)[0]
        return Totals(row.requests, row.prompt_tokens, row.completion_tokens)
