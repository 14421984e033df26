"""The auth servicer's unit tests (admin rules, audited actions, idempotent completion records) again, on SQLite and
on a real PostgreSQL server (`database_url`, tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.support.recollect import recollect
from tests.unit import test_auth_service

pytestmark = pytest.mark.integration

recollect(globals(), {test_auth_service: ("servicer",)})
