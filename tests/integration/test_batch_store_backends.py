"""The batch store and worker's unit tests (tests/unit/test_batch_worker.py) on SQLite and on a real PostgreSQL
server (the root conftest's `database_url`): the router's files and batches work on both."""

from __future__ import annotations

import pytest

from tests.support.recollect import recollect
from tests.unit import test_batch_worker

pytestmark = pytest.mark.integration

recollect(globals(), {test_batch_worker: ("store", "vault")})
