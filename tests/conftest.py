"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.support.redis_server import running_redis


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis server for the whole session (started on first use, stopped at the end)."""
    with running_redis() as url:
        yield url


@pytest.fixture
def database_url(tmp_path):
    """A fresh, empty database per test (SQLite here; branch pg-storage makes it run once per backend)."""
    yield f"sqlite:///{tmp_path / 'test.db'}"
