"""The auth service's storage, assembled as the service does it, on any database URL, with a clock tests can move."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa
from llmaas.auth import __file__ as auth_init
from llmaas.auth.audit import AuditLog, AuditStore
from llmaas.auth.sealed import Sealer
from llmaas.auth.store import KeyStore
from llmaas.common.db import make_engine, migrate

MIGRATIONS = Path(auth_init).parent / "migrations"
SECRET = "tests-internal-secret-0123456789abcdefghij"


@dataclass
class Clock:
    """A settable clock (the store's notion of now), starting at a fixed instant."""
    now: datetime = field(default_factory=lambda: datetime(2026, 11, 23, 12, 0, tzinfo=UTC))

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta) -> None:
        self.now += timedelta(**delta)


def auth_engine(url: str) -> sa.Engine:
    engine = make_engine(url)
    migrate(engine, MIGRATIONS)
    return engine


def key_store(engine: sa.Engine, clock: Clock | None = None, cache_seconds: float = 0.0) -> KeyStore:
    return KeyStore(engine, Sealer(SECRET), clock=clock, cache_seconds=cache_seconds)


def audit_log(engine: sa.Engine) -> AuditLog:
    return AuditLog(AuditStore(engine))
