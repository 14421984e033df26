"""Unit tests start no process: their `database_url` is SQLite only. tests/integration/test_storage_backends.py
collects the storage tests again under the root conftest's `database_url`, SQLite and a real PostgreSQL."""

from __future__ import annotations

import pytest


@pytest.fixture
def database_url(tmp_path):
    return f"sqlite:///{tmp_path / 'test.db'}"
