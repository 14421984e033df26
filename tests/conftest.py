"""Fixtures shared by every test folder."""

from __future__ import annotations

import pytest

from tests.support.redis_server import running_redis


@pytest.fixture(scope="session")
def redis_url():
    """A real Redis server for the whole session (started on first use, stopped at the end)."""
    with running_redis() as url:
        yield url
