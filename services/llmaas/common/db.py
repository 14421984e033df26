"""SQL storage shared by the services that own tables: SQLAlchemy engines and Alembic migrations.

SQLite (one file per service under the data directory) by default; a postgresql:// URL (psycopg 3) works with the
same code and migrations. Each service keeps its own migrations next to its code and upgrades to head at start, so
each needs a database of its own (as each has its own SQLite file): they all track their schema in alembic_version.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import zlib
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.dialects import postgresql, sqlite


def database_url(url: str) -> sa.URL:
    """postgresql:// (and libpq's postgres://) mean psycopg 3, the driver the project ships; others pass through."""
    parsed = sa.make_url(url)
    if parsed.drivername in ("postgresql", "postgres"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed


def as_utc(value: datetime | None) -> datetime | None:
    """A timestamp read back from the database, in UTC: SQLite returns them naive (they were written in UTC),
    PostgreSQL in the session's time zone."""
    if value is None:
        return None
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _private_sqlite_file(url: str) -> None:
    """Creates the SQLite database file readable by its owner only (0600), or makes it so. SQLite gives its WAL and
    shared-memory files the database file's mode."""
    database = sa.make_url(url).database
    if not database or database == ":memory:" or database.startswith("file:"):
        return
    fd = os.open(database, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        os.fchmod(fd, 0o600)
    finally:
        os.close(fd)


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        _private_sqlite_file(url)
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):
            # WAL: readers never block the writer. synchronous=NORMAL: a committed transaction survives the crash or
            # SIGKILL of any process (the WAL is written before commit returns; only its fsync waits for the next
            # checkpoint), so audit records and usage are never lost when a service dies; an OS crash or power cut
            # may lose the last commits. Sites that need that too run PostgreSQL. FULL cost auth ~3 ms per request.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    parsed = database_url(url)
    # Pre-ping: a pooled connection the server (or a failover, or an idle timeout) closed is replaced, not handed
    # out. Recycle under the usual proxy/firewall idle limits. libpq waits forever for an unreachable host by
    # default: bound it unless the URL says otherwise.
    connect_args = {} if "connect_timeout" in parsed.query else {"connect_timeout": 10}
    return sa.create_engine(parsed, pool_pre_ping=True, pool_recycle=1800, connect_args=connect_args)


def upsert(conn: sa.Connection, table: sa.Table, values: dict, key: tuple[str, ...]) -> None:
    """Inserts the row, or updates the one with the same key, in one statement. Update-then-insert is not safe on
    PostgreSQL: two transactions can both find no row to update, and the second insert then fails."""
    insert = {"postgresql": postgresql.insert, "sqlite": sqlite.insert}[conn.dialect.name]
    stmt = insert(table).values(values)
    conn.execute(stmt.on_conflict_do_update(
        index_elements=list(key), set_={name: stmt.excluded[name] for name in values if name not in key}))


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with os.fdopen(os.open(f"{database}.migrate.lock", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def migrate(engine: sa.Engine, migrations_dir: Path) -> None:
    """Upgrades to head. Replicas of a service start together: one migrates while the others wait for it (a file
    lock beside a SQLite database, a transaction-scoped advisory lock on PostgreSQL)."""
    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    is_sqlite = engine.dialect.name == "sqlite"
    with _sqlite_file_lock(engine) if is_sqlite else contextlib.nullcontext(), engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": zlib.crc32(str(migrations_dir).encode())})
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
