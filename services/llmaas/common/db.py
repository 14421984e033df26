"""SQL storage shared by the services that own tables: SQLAlchemy engines and Alembic migrations.

SQLite (one file per service under the data directory) by default; a postgresql:// URL works with the same code.
Each service keeps its own migrations next to its code and upgrades to head at start.
"""

from __future__ import annotations

import contextlib
import fcntl
import zlib
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # WAL: readers never block the writer; durable on commit.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")
            cur.execute("PRAGMA busy_timeout=5000")
            cur.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True)


@contextlib.contextmanager
def _sqlite_file_lock(engine: sa.Engine) -> Iterator[None]:
    database = engine.url.database
    if not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as lock:
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
