"""The usage ledger and the limits: reservations before dispatch, idempotent settlements after.

Why SQL and not Redis for the limits: the budget is money, and a reservation must be in the ledger exactly when it
is counted against the limits. One SQL transaction does both (insert the request's row and charge every window it
touches, or neither), so a crash can never leave a charge without its ledger row or the reverse, and the counters
survive a restart like the ledger does. Redis would be a second store to keep in step with the ledger (and an
in-memory one in tests). The cost is one short write transaction per round of reservations and per round of
settlements (a round serves every one that arrived together); bench/metering.py measures it.

How a reservation never overshoots, across any number of metering replicas:
- every window (key quota slot, tenant minute/hour/day/month) is a row of `limit_window`;
- reservations are written in rounds (llmaas.metering.group_commit gathers the ones that arrive together; a lone
  one is a round of one), one transaction per round: insert the requests' rows (idempotent by request id: an id
  already there is a replay, charged nothing), create the window rows if missing, lock them (SQLite: the database's
  write lock, taken at BEGIN IMMEDIATE; PostgreSQL: SELECT ... FOR UPDATE, in one order, so replicas never
  deadlock) and read their counters. Then each reservation, in arrival order, is checked against every one of its
  limits on the counters as the previous ones left them, exactly as if they had been made one after another: one
  that does not fit is refused (its row deleted, nothing charged) and the next ones are checked without it. The
  round ends by adding the granted charges to the windows and committing; only then does any Reserve answer, so a
  granted reservation is in the ledger before the router dispatches the request. Nothing is read that another
  writer could change before the commit, so the limits hold across replicas as they did with one transaction per
  reservation.
- the worst case is charged (input bound + max_tokens; cost at those bounds); Settle replaces it by the real usage in
  the same windows (even after the window ended) and releases the rest, once: the conditional
  `UPDATE usage SET settled_at = ... WHERE settled_at IS NULL` is the idempotency check. Settlements go in rounds as
  well (SettleBatch: the router's batches, plus whatever else arrived): one transaction per round, each item settled
  as it would be alone; a repeated request id in a round is settled by its first occurrence.
- a round that fails on one item's data (a value the database refuses) is replayed one item per transaction, so the
  others still go through; a round the database itself refuses (locked, unreachable) fails every item alike.
- a settlement never exceeds its reservation: usage above the reserved input, output (and audio) bounds is capped
  to them, recorded as the reservation, and the excess returned (`Settlement.excess`) for the caller to log and
  report. A settler that claims more than it reserved is wrong (or hostile): it must not be able to charge a tenant
  more than the limits admitted, nor lock it out by its hourly limit.

What each window counts: a key quota's max_requests and max_tokens (input + output tokens); the tier's
requests_per_minute, output tokens per hour and per day; the month's cost against the monthly budget.
"""

from __future__ import annotations

import collections
import datetime as dt
import functools
import json
import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

import sqlalchemy as sa

from llmaas.common.identity import Quota
from llmaas.metering import hot_sql
from llmaas.metering import tiers as tw
from llmaas.metering.hot_sql import Counters
from llmaas.metering.pricing import PriceTable, Usage, cost_nano, energy_uwh, worst_case_nano
from llmaas.metering.tables import limit_window, tenant_tier, usage
from llmaas.metering.tiers import Tier, Tiers

# rejected: refused before dispatch once granted (the guard blocked the prompt, or failed): released, nothing billed.
OUTCOMES = ("completed", "failed", "cancelled", "rejected", "expired")


@dataclass(frozen=True)
class Totals:
    requests: int  # served (completed) only
    prompt_tokens: int
    completion_tokens: int


class UnknownReservation(Exception):
    pass


class UnknownTier(ValueError):
    pass


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


TIER_CACHE_SECONDS = 5.0


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


def _over(window: Window, c: Charge) -> str:
    """What the window would pass if charged with c (requests, tokens, output_tokens, budget); "" if it fits."""
    lim = window.limit
    if lim.max_requests is not None and window.requests + c.requests > lim.max_requests:
        return "requests"
    if lim.max_tokens is not None and window.tokens + c.tokens > lim.max_tokens:
        return "tokens"
    if lim.max_output is not None and window.output_tokens + c.output_tokens > lim.max_output:
        return "output_tokens"
    if lim.max_cost is not None and window.cost_nano + c.cost_nano > lim.max_cost:
        return "budget"
    return ""


def _plus(a: Counters, b: Counters) -> Counters:
    return a[0] + b[0], a[1] + b[1], a[2] + b[2], a[3] + b[3]


def _minus(a: Counters, b: Counters) -> Counters:
    return a[0] - b[0], a[1] - b[1], a[2] - b[2], a[3] - b[3]


_ZERO: Counters = (0, 0, 0, 0)


def _waves(request_ids: list[str]) -> list[list[int]]:
    """Indexes grouped so that no wave repeats a request id, in order: a repeated id is decided after the first (a
    replay of it, or a new try if the first was refused), as it would be one after another."""
    seen: dict[str, int] = {}
    waves: list[list[int]] = []
    for i, rid in enumerate(request_ids):
        n = seen.get(rid, 0)
        seen[rid] = n + 1
        if n == len(waves):
            waves.append([])
        waves[n].append(i)
    return waves


@dataclass(frozen=True)
class _Prepared:
    """A reservation with what its round needs: its charge, its windows (lock order) and its ledger row."""
    r: Reservation
    charge: Charge
    limits: list[Limit]
    row: dict


class SettleItem(NamedTuple):
    request_id: str
    used: Usage
    outcome: str


# A reservation's row as settlement reads it back (the columns hot_sql.Tx.claim returns, in its order).
_Claimed = collections.namedtuple("_Claimed", hot_sql.CLAIMED_COLUMNS)


class _Record(NamedTuple):
    request_id: str
    used: Usage
    cost: int
    energy: int
    outcome: str


def _one(results: list):
    """The single result of a round of one: its value, or its exception raised."""
    [result] = results
    if isinstance(result, Exception):
        raise result
    return result


class Ledger:
    def __init__(self, engine: sa.Engine, prices: PriceTable, tiers: Tiers) -> None:
        self._engine = engine
        self.prices = prices
        self.tiers = tiers
        self._tier_cache: dict[str, tuple[float, Tier]] = {}
        # The DB-API's error for the database itself (locked, unreachable, I/O), as opposed to an item's data.
        self.unavailable = engine.dialect.loaded_dbapi.OperationalError

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
        return _one(self.reserve_many([(r, now)]))

    def reserve_many(self, items: list[tuple[Reservation, dt.datetime]]) -> list[Decision | Exception]:
        """Reservations in one transaction, decided in the order given exactly as one after another would be (see
        the module's docstring). One result per item: its Decision, or the exception that failed it."""
        prepared: list[_Prepared | Exception] = []
        for r, now in items:
            try:
                prepared.append(self._prepare(r, now))
            except Exception as e:  # e.g. the tier could not be read: this item only
                prepared.append(e)
        ok = [p for p in prepared if isinstance(p, _Prepared)]
        decided = iter(self._in_rounds(ok, self._reserve_round))
        return [next(decided) if isinstance(p, _Prepared) else p for p in prepared]

    def _prepare(self, r: Reservation, now: dt.datetime) -> _Prepared:
        tier = self._cached_tier(r.tenant_id)
        prices = self.prices.at(now)
        charge = Charge(1, r.max_input_tokens + r.max_output_tokens, r.max_output_tokens,
                        worst_case_nano(prices, r.kind, r.max_input_tokens, r.max_output_tokens, r.max_audio_ms))
        limits = plan(r, tier, now)
        utc = now.astimezone(dt.UTC)
        row = {"request_id": r.request_id, "tenant_id": r.tenant_id, "key_id": r.key_id, "model": r.model,
               "kind": r.kind, "reserved_input_tokens": r.max_input_tokens,
               "reserved_output_tokens": r.max_output_tokens, "reserved_audio_ms": r.max_audio_ms,
               "reserved_cost_nano": charge.cost_nano,
               "kwh_per_million": str(r.kwh_per_million) if r.kwh_per_million is not None else None,
               "windows": json.dumps([[lim.scope, lim.start] for lim in limits]), "reserved_at": now,
               "day": utc.date().isoformat(), "month": utc.date().isoformat()[:7]}
        return _Prepared(r, charge, limits, row)

    def _cached_tier(self, tenant_id: str) -> Tier:
        """The tenant's tier, read at most every TIER_CACHE_SECONDS (an assignment reaches every replica within that
        time; this replica sees its own at once)."""
        hit = self._tier_cache.get(tenant_id)
        if hit is not None and time.monotonic() - hit[0] < TIER_CACHE_SECONDS:
            return hit[1]
        tier, _ = self.tenant_tier(tenant_id)
        self._tier_cache[tenant_id] = (time.monotonic(), tier)
        return tier

    def _in_rounds(self, items: list, round_fn) -> list:
        """round_fn(tx, items) in one transaction. If it fails on an item's data, each item again in a transaction
        of its own, so that only the bad one fails; if the database itself fails (locked past its timeout,
        unreachable), every item gets that error: replaying them one by one would only repeat it."""
        if not items:
            return []
        try:
            with hot_sql.transaction(self._engine) as tx:
                return round_fn(tx, items)
        except self.unavailable as e:
            return [e] * len(items)
        except Exception as e:
            if len(items) == 1:
                return [e]
        return [self._in_rounds([item], round_fn)[0] for item in items]

    def _reserve_round(self, tx: hot_sql.Tx, items: list[_Prepared]) -> list[Decision]:
        decisions: list[Decision] = [None] * len(items)  # type: ignore[list-item]
        for wave in _waves([p.r.request_id for p in items]):
            self._reserve_wave(tx, [(i, items[i]) for i in wave], decisions)
        return decisions

    @staticmethod
    def _reserve_wave(tx: hot_sql.Tx, wave: list[tuple[int, _Prepared]], decisions: list[Decision]) -> None:
        rows = [dict(p.row, reserved_at=tx.ts(p.row["reserved_at"])) for _, p in wave]
        new = tx.insert_usage(rows)
        tx.ensure_windows({(lim.scope, lim.start, lim.end) for _, p in wave if p.r.request_id in new
                           for lim in p.limits})
        counters = tx.lock_windows((lim.scope, lim.start) for _, p in wave for lim in p.limits)
        before = dict(counters)
        refused = []
        for i, p in wave:
            keys = [(lim.scope, lim.start) for lim in p.limits]
            current = tuple(Window(lim, *counters.get(k, _ZERO)) for lim, k in zip(p.limits, keys, strict=True))
            if p.r.request_id not in new:  # a retried Reserve: already charged once
                decisions[i] = Decision(True, p.charge, current, replay=True)
                continue
            full = next((w for w in current if _over(w, p.charge)), None)
            if full is not None:
                refused.append(p.r.request_id)
                decisions[i] = Decision(False, p.charge, current, refused_by=full,
                                        exhausted=_over(full, p.charge))
                continue
            charge = (p.charge.requests, p.charge.tokens, p.charge.output_tokens, p.charge.cost_nano)
            for k in keys:
                counters[k] = _plus(counters.get(k, _ZERO), charge)
            decisions[i] = Decision(True, p.charge, tuple(Window(lim, *counters[k])
                                                          for lim, k in zip(p.limits, keys, strict=True)))
        tx.delete_usage(refused)  # nothing of a refused reservation stays
        tx.add_to_windows({k: _minus(v, before.get(k, _ZERO)) for k, v in counters.items()})

    def settle(self, request_id: str, used: Usage, outcome: str, now: dt.datetime) -> Settlement:
        """Writes the real usage once and corrects every window charged at reservation. recorded=False if the
        request was already settled (the earlier settlement stands); UnknownReservation if it never was reserved."""
        return _one(self.settle_many([SettleItem(request_id, used, outcome)], now))

    def settle_many(self, items: list[SettleItem], now: dt.datetime) -> list[Settlement | Exception]:
        """Settlements in one transaction, each exactly as settle() would (a repeated request id: its first
        occurrence settles, the others find it settled). One result per item: its Settlement, or the exception
        that failed it (UnknownReservation: never reserved)."""
        return self._in_rounds(items, functools.partial(self._settle_round, now=now))

    def _settle_round(self, tx: hot_sql.Tx, items: list[SettleItem], now: dt.datetime) -> list[Settlement | Exception]:
        ids = list(dict.fromkeys(item.request_id for item in items))
        claimed = tx.claim(ids, now)
        known = tx.existing([i for i in ids if i not in claimed])  # settled before, or never reserved
        results: list[Settlement | Exception] = []
        records, deltas = [], {}
        for item in items:
            row = claimed.pop(item.request_id, None)
            if row is None:
                # Settled before, or by this id's first occurrence in this round: the earlier settlement stands.
                results.append(Settlement(False) if item.request_id in known else UnknownReservation(item.request_id))
                continue
            known.add(item.request_id)
            c = _Claimed(*row)
            used = _within(item.used, c)
            prices = self.prices.at(_as_datetime(c.reserved_at))
            cost = cost_nano(prices, c.kind, used)
            energy = energy_uwh(Decimal(c.kwh_per_million) if c.kwh_per_million else None, used.total_tokens)
            records.append(_Record(c.request_id, used, cost, energy, item.outcome))
            # A request that ended without using anything gives its request slot back too.
            nothing_used = item.outcome != "completed" and used.total_tokens == 0 and used.audio_ms == 0
            delta = (-1 if nothing_used else 0,
                     used.total_tokens - (c.reserved_input_tokens + c.reserved_output_tokens),
                     used.completion_tokens - c.reserved_output_tokens, cost - c.reserved_cost_nano)
            for scope, start in json.loads(c.windows):
                deltas[(scope, start)] = _plus(deltas.get((scope, start), _ZERO), delta)
            excess = Usage(item.used.prompt_tokens - used.prompt_tokens,
                           item.used.completion_tokens - used.completion_tokens,
                           item.used.reasoning_tokens - used.reasoning_tokens, item.used.audio_ms - used.audio_ms)
            results.append(Settlement(True, c.tenant_id, c.key_id, c.model, c.kind, used, cost, energy, excess))
        tx.record([{"id": r.request_id, "p": r.used.prompt_tokens, "c": r.used.completion_tokens,
                    "r": r.used.reasoning_tokens, "a": r.used.audio_ms, "cost": r.cost, "energy": r.energy,
                    "outcome": r.outcome} for r in records])
        tx.add_to_windows(deltas)  # windows pruned since (long over) are no longer there: nothing to correct
        return results

    def expire(self, older_than: dt.datetime, now: dt.datetime, limit: int = 500) -> int:
        """Releases reservations never settled (a router that died mid-request): settled as `expired`, nothing billed,
        in one transaction. Returns how many."""
        with self._engine.connect() as conn:
            ids = conn.execute(sa.select(usage.c.request_id).where(
                usage.c.settled_at.is_(None), usage.c.reserved_at < older_than).limit(limit)).scalars().all()
        done = self.settle_many([SettleItem(i, Usage(), "expired") for i in ids], now)
        return sum(isinstance(s, Settlement) and s.recorded for s in done)

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

    def budget_use(self, now: dt.datetime) -> list[tuple[str, float]]:
        """(tenant, this month's charge / its monthly budget) of every tenant with a budget that was charged this
        month: the metrics' view (llmaas.metering.metrics.BudgetUse). Two queries, whatever the number of tenants."""
        start, _ = tw.month_window(now)
        w, t = limit_window.c, tenant_tier.c
        with self._engine.connect() as conn:
            charged = conn.execute(sa.select(w.scope, w.cost_nano).where(
                w.window_start == start, w.scope.like("tenant:%:month"))).all()
            assigned = {r.tenant_id: r for r in conn.execute(sa.select(t.tenant_id, t.tier, t.monthly_budget_nano))}
        found = []
        for scope, cost in charged:
            tenant = scope[len("tenant:"):-len(":month")]
            row = assigned.get(tenant)
            tier = (self.tiers.get(row.tier).with_budget(row.monthly_budget_nano)
                    if row is not None and row.tier in self.tiers.by_id else self.tiers.get(""))
            if tier.monthly_budget_nano:
                found.append((tenant, cost / tier.monthly_budget_nano))
        return found

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
