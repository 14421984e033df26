"""The ledger's request-path statements, on the DB-API connection itself: one write transaction per round of
reservations or settlements (llmaas.metering.ledger decides; this module only speaks SQL).

Why not SQLAlchemy Core here: measured on the project's 2-core machine, one `Connection.execute` of a cached text()
statement costs ~40-75 us of CPU and `engine.begin()`/commit ~40 us more, against ~6 us for the same statement on
the sqlite3 cursor: about 40% of a lone reserve + settle (1.1 ms of CPU in process before, 0.65 ms now). The engine
still owns the connections (its pool, PostgreSQL's pre-ping, SQLite's pragmas); the schema is still tables.py and its
migrations; every other query (usage reports, tiers, sweeps) stays in SQLAlchemy.

The SQL is the same on SQLite (3.35+: RETURNING, ON CONFLICT) and PostgreSQL; what differs is written here once:
- parameters: `:name` in the text, turned into psycopg's `%(name)s`;
- timestamps: SQLite stores SQLAlchemy's DateTime format (naive UTC text, so that its queries compare the same
  strings); psycopg takes the aware datetime;
- locking: SQLite takes its single write lock at BEGIN IMMEDIATE, before anything is read; PostgreSQL locks the
  window rows with SELECT ... FOR UPDATE, always in the same order (byte order of scope, then start: COLLATE "C"
  and Python's sort agree), so two replicas' rounds never deadlock.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import re
from collections.abc import Iterable, Iterator, Sequence

import sqlalchemy as sa

# A window row's identity and counters.
Key = tuple[str, int]
Counters = tuple[int, int, int, int]  # requests, tokens, output_tokens, cost_nano

USAGE_COLUMNS = ("request_id", "tenant_id", "key_id", "model", "kind", "reserved_input_tokens",
                 "reserved_output_tokens", "reserved_audio_ms", "reserved_cost_nano", "kwh_per_million", "windows",
                 "reserved_at", "day", "month")
# What settlement reads back from a reservation (llmaas.metering.ledger names its fields after these).
CLAIMED_COLUMNS = ("request_id", "tenant_id", "key_id", "model", "kind", "reserved_input_tokens",
                   "reserved_output_tokens", "reserved_audio_ms", "reserved_cost_nano", "kwh_per_million", "windows",
                   "reserved_at")


@functools.lru_cache(maxsize=1024)
def _pg(sql: str) -> str:
    """psycopg's parameter style (the texts repeat: translated once each)."""
    return re.sub(r":(\w+)", r"%(\1)s", sql)


def _placeholders(prefix: str, n: int) -> str:
    return ", ".join(f":{prefix}{i}" for i in range(n))


class Tx:
    """The statements of a round, inside one transaction (see transaction())."""

    def __init__(self, cursor, postgres: bool) -> None:
        self._cur = cursor
        self.postgres = postgres

    # --- plumbing ------------------------------------------------------------------------------------------------

    def _sql(self, sql: str) -> str:
        return _pg(sql) if self.postgres else sql

    def rows(self, sql: str, params: dict) -> list[tuple]:
        self._cur.execute(self._sql(sql), params)
        return self._cur.fetchall()

    def run(self, sql: str, params: dict) -> None:
        self._cur.execute(self._sql(sql), params)

    def many(self, sql: str, params: Sequence[dict]) -> None:
        if params:
            self._cur.executemany(self._sql(sql), params)

    def ts(self, when: dt.datetime):
        """A timestamp as the column expects it (see the module's docstring)."""
        if self.postgres:
            return when
        return when.astimezone(dt.UTC).replace(tzinfo=None).isoformat(" ", "microseconds")

    # --- reservations --------------------------------------------------------------------------------------------

    def insert_usage(self, rows: Sequence[dict]) -> set[str]:
        """Inserts the reservations' rows (request ids unique within `rows`); returns the ids inserted: the others
        were reserved before (a replay). In request id order, so two replicas inserting the same ids (replays only)
        wait for each other in one order."""
        rows = sorted(rows, key=lambda r: r["request_id"])
        values, params = [], {}
        for i, row in enumerate(rows):
            values.append("(" + ", ".join(f":{c}_{i}" for c in USAGE_COLUMNS) + ")")
            params.update({f"{c}_{i}": row[c] for c in USAGE_COLUMNS})
        sql = (f"INSERT INTO usage ({', '.join(USAGE_COLUMNS)}) VALUES {', '.join(values)}"
               " ON CONFLICT DO NOTHING RETURNING request_id")
        return {r[0] for r in self.rows(sql, params)}

    def ensure_windows(self, windows: Iterable[tuple[str, int, int]]) -> None:
        """Creates the window rows that do not exist yet (scope, start, end), in key order."""
        self.many("INSERT INTO limit_window (scope, window_start, window_end, requests, tokens, output_tokens,"
                  " cost_nano) VALUES (:scope, :start, :end, 0, 0, 0, 0) ON CONFLICT DO NOTHING",
                  [{"scope": s, "start": start, "end": end} for s, start, end in sorted(windows)])

    def lock_windows(self, keys: Iterable[Key]) -> dict[Key, Counters]:
        """The windows' counters, locked until the end of the transaction (PostgreSQL; SQLite's lock is already
        the whole database's). A window missing from the result has no row."""
        keys = sorted(set(keys))
        if not keys:
            return {}
        where = " OR ".join(f"(scope = :s{i} AND window_start = :w{i})" for i in range(len(keys)))
        params = {}
        for i, (scope, start) in enumerate(keys):
            params[f"s{i}"], params[f"w{i}"] = scope, start
        order = ' ORDER BY scope COLLATE "C", window_start FOR UPDATE' if self.postgres else ""
        sql = f"SELECT scope, window_start, requests, tokens, output_tokens, cost_nano FROM limit_window WHERE {where}"
        return {(r[0], int(r[1])): (int(r[2]), int(r[3]), int(r[4]), int(r[5])) for r in self.rows(sql + order, params)}

    def add_to_windows(self, deltas: dict[Key, Counters]) -> None:
        """Adds each window's net change of the round (a window already locked by this transaction), in key order."""
        self.many("UPDATE limit_window SET requests = requests + :r, tokens = tokens + :t,"
                  " output_tokens = output_tokens + :o, cost_nano = cost_nano + :c"
                  " WHERE scope = :scope AND window_start = :start",
                  [{"scope": k[0], "start": k[1], "r": d[0], "t": d[1], "o": d[2], "c": d[3]}
                   for k, d in sorted(deltas.items()) if any(d)])

    def delete_usage(self, request_ids: Sequence[str]) -> None:
        if request_ids:
            self.run(f"DELETE FROM usage WHERE request_id IN ({_placeholders('i', len(request_ids))})",
                     {f"i{n}": rid for n, rid in enumerate(request_ids)})

    # --- settlements ---------------------------------------------------------------------------------------------

    def claim(self, request_ids: Sequence[str], now: dt.datetime) -> dict[str, tuple]:
        """Marks the reservations settled, those not settled yet; returns their rows (CLAIMED_COLUMNS) by id. The
        conditional UPDATE is the idempotency check: an id settled before is not returned."""
        if not request_ids:
            return {}
        params = {f"i{n}": rid for n, rid in enumerate(request_ids)}
        params["now"] = self.ts(now)
        rows = self.rows(f"UPDATE usage SET settled_at = :now WHERE request_id IN"
                         f" ({_placeholders('i', len(request_ids))}) AND settled_at IS NULL"
                         f" RETURNING {', '.join(CLAIMED_COLUMNS)}", params)
        return {r[0]: r for r in rows}

    def existing(self, request_ids: Sequence[str]) -> set[str]:
        if not request_ids:
            return set()
        rows = self.rows(f"SELECT request_id FROM usage WHERE request_id IN ({_placeholders('i', len(request_ids))})",
                         {f"i{n}": rid for n, rid in enumerate(request_ids)})
        return {r[0] for r in rows}

    def record(self, records: Sequence[dict]) -> None:
        """Writes the settled usage of claimed rows: id, p, c, r, a, cost, energy, outcome."""
        self.many("UPDATE usage SET prompt_tokens = :p, completion_tokens = :c, reasoning_tokens = :r,"
                  " audio_ms = :a, cost_nano = :cost, energy_uwh = :energy, outcome = :outcome"
                  " WHERE request_id = :id", records)


@contextlib.contextmanager
def transaction(engine: sa.Engine) -> Iterator[Tx]:
    """One write transaction on a connection of the engine's pool: committed when the block ends, rolled back if it
    raises. On SQLite it starts with the write lock (BEGIN IMMEDIATE: a round reads counters, then writes them)."""
    postgres = engine.dialect.name == "postgresql"
    conn = engine.raw_connection()
    try:
        cursor = conn.cursor()
        try:
            if not postgres:
                cursor.execute("BEGIN IMMEDIATE")
            yield Tx(cursor, postgres)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        finally:
            cursor.close()
    finally:
        conn.close()  # back to the pool
