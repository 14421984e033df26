"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.support.postgres_server import fresh_database, running_postgres
from tests.support.redis_server import running_redis


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis server for the whole session (started on first use, stopped at the end)."""
    with running_redis() as url:
        yield url


@pytest.fixture(scope="session")
def postgres_url():
    """A real PostgreSQL server for the whole session (started on first use, stopped and deleted at the end). The
    URL is the superuser's, on its maintenance database: tests take a database of their own (`database_url`)."""
    with running_postgres() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    """A fresh, empty database per test, once on each backend: a new SQLite file, or a new database on the
    session's PostgreSQL server (dropped after). The server only starts if a postgresql case runs."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'test.db'}"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url
