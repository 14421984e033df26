from pathlib import Path

import pytest
from llmaas.common.db import make_engine, migrate
from llmaas.metering import ledger as ledger_mod
from llmaas.metering.ledger import Ledger, UnknownReservation

MIGRATIONS = Path(ledger_mod.__file__).parent / "migrations"


@pytest.fixture
def ledger(database_url: str) -> Ledger:
    engine = make_engine(database_url)
    migrate(engine, MIGRATIONS)
    migrate(engine, MIGRATIONS)  # idempotent at start
    return Ledger(engine)


def test_settlement_is_idempotent_by_request_id(ledger: Ledger):
    assert ledger.reserve("r1", "t", "k", "m", 100, 50)
    assert ledger.settle("r1", 10, 5, "completed") is True
    assert ledger.settle("r1", 99, 99, "completed") is False  # a retried hand-off changes nothing
    ledger.reserve("r2", "t", "k2", "m", 100, 50)
    ledger.settle("r2", 1, 2, "cancelled")
    t = ledger.totals("t")
    assert (t.requests, t.prompt_tokens, t.completion_tokens) == (2, 11, 7)
    assert ledger.totals("t", "k2").completion_tokens == 2
    assert ledger.totals("other").requests == 0


def test_unreserved_settlement_is_an_error(ledger: Ledger):
    with pytest.raises(UnknownReservation):
        ledger.settle("nope", 1, 1, "completed")
