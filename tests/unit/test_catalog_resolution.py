import datetime as dt

from llmaas.catalog.entries import load_catalog
from llmaas.catalog.servicer import model_retired
from llmaas.stack.paths import DEFAULT_CATALOG, REFERENCE_CATALOG

CATALOG = load_catalog([DEFAULT_CATALOG, REFERENCE_CATALOG])


def test_retired_model_error_names_the_successor():
    err = model_retired(CATALOG.lookup("cogito:32b"), CATALOG, dt.date(2026, 11, 23))
    assert err is not None and err.code == "model_retired" and err.param == "model"
    assert "2026-06-30" in err.message and "'gpt-oss:120b'" in err.message


def test_model_still_in_production_is_not_retired():
    assert model_retired(CATALOG.lookup("cogito:32b"), CATALOG, dt.date(2026, 1, 1)) is None
    assert model_retired(CATALOG.lookup("smollm2:135m"), CATALOG, dt.date(2030, 1, 1)) is None
