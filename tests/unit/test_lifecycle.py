"""llmaas.catalog.lifecycle: phases, notice, sunset, headers and successors computed from catalogue dates."""

import dataclasses
import datetime as dt
from pathlib import Path

import pytest
from llmaas.catalog import lifecycle
from llmaas.catalog.entries import Catalog, load_catalog
from llmaas.stack.paths import DEFAULT_CATALOG

REFERENCE = Path(__file__).resolve().parents[2] / "deploy" / "catalog" / "reference.yaml"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog([DEFAULT_CATALOG, REFERENCE])


@pytest.mark.parametrize("day,expected", [
    (dt.date(2025, 3, 1), dt.date(2024, 12, 1)),
    (dt.date(2026, 6, 30), dt.date(2026, 3, 30)),
    (dt.date(2026, 5, 31), dt.date(2026, 2, 28)),
    (dt.date(2024, 5, 31), dt.date(2024, 2, 29)),
    (dt.date(2026, 12, 30), dt.date(2026, 9, 30)),
])
def test_months_before_clamps_to_the_month_end(day, expected):
    assert lifecycle.months_before(day, 3) == expected


@pytest.mark.parametrize("today,phase", [
    (dt.date(2025, 6, 13), "production"),
    (dt.date(2026, 3, 29), "production"),  # the day before the notice
    (dt.date(2026, 3, 30), "notice"),      # end of support minus 3 months
    (dt.date(2026, 6, 29), "notice"),
    (dt.date(2026, 6, 30), "end_of_support"),  # DSP: end of support and sunset
    (dt.date(2026, 11, 23), "end_of_support"),
])
def test_cogito_32b_phases(catalog, today, phase):
    entry = catalog.lookup("cogito:32b")
    assert lifecycle.phase(entry, today) == phase
    assert lifecycle.announces_deprecation(entry, today) == (phase != "production")


def test_notice_and_sunset_dates(catalog):
    entry = catalog.lookup("cogito:32b")
    assert lifecycle.notice_start(entry) == dt.date(2026, 3, 30)
    assert lifecycle.sunset_date(entry) == dt.date(2026, 6, 30)
    smollm2 = catalog.lookup("smollm2:135m")  # no end of support: production forever, no headers
    assert lifecycle.notice_start(smollm2) is None and lifecycle.sunset_date(smollm2) is None
    assert lifecycle.phase(smollm2, dt.date(2100, 1, 1)) == "production"
    assert lifecycle.deprecation_headers(smollm2, dt.date(2100, 1, 1)) == {}


def test_headers(catalog):
    entry = catalog.lookup("qwen3:0.6b")  # DSP 2026-12-30, LTS: same arithmetic
    assert lifecycle.deprecation_headers(entry, dt.date(2026, 9, 29)) == {}
    assert lifecycle.deprecation_headers(entry, dt.date(2026, 11, 23)) == {
        "Deprecation": f"@{int(dt.datetime(2026, 9, 30, tzinfo=dt.UTC).timestamp())}",
        "Sunset": "Wed, 30 Dec 2026 00:00:00 GMT",
    }


def test_deprecated_models_are_removed(catalog):
    entry = catalog.lookup("qwen2.5:14b")
    assert lifecycle.phase(entry, dt.date(2025, 10, 17)) == "removed"
    assert lifecycle.phase(entry, dt.date(2025, 10, 16)) == "notice"


def test_phases_on_2026_11_23(catalog):
    today = dt.date(2026, 11, 23)
    by_phase: dict[str, set[str]] = {}
    for m in catalog.models:
        by_phase.setdefault(lifecycle.phase(m, today), set()).add(m.id)
    assert len(by_phase["removed"]) == 42
    # every row of the schedule ending on 2026-06-30 or 2026-09-30 (14 + 7)
    assert len(by_phase["end_of_support"]) == 21
    assert {"cogito:32b", "gemma3:27b", "gpt-oss:20b", "mistral-small3.2:24b", "gemma4:e4b"} <= by_phase[
        "end_of_support"]
    assert len(by_phase["notice"]) == 30  # the 2026-12-30 rows: notice since 2026-09-30
    assert by_phase["production"] == {
        "smollm2:135m", "ppocr:v4", "whisper:tiny.en", "all-minilm:22m", "all-minilm-rerank:22m",
        "nvidia/llama-nemotron-rerank-vl-1b-v2", "bge-m3:567m", "gpt-oss:120b", "granite-embedding:278m", "llama3.3:70b",
        "qwen3-2507:235b", "qwen3-2507-think:4b"}


def test_successor_follows_the_chain(catalog, tmp_path):
    assert lifecycle.successor(catalog.lookup("cogito:32b"), catalog).id == "gpt-oss:120b"
    assert lifecycle.successor(catalog.lookup("gpt-oss:120b"), catalog) is None
    status = lifecycle.status(catalog.lookup("cogito:32b"), catalog, dt.date(2026, 11, 23))
    assert (status.phase, status.successor, status.announce, status.lts) == (
        "end_of_support", "gpt-oss:120b", True, False)

    path = tmp_path / "chain.yaml"
    path.write_text("models:\n" + "".join(
        f"  - {{id: {i}, type: chat, production_date: 2025-01-01, end_of_support: 2026-01-01{m}}}\n"
        for i, m in (("a", ", migration: b"), ("b", ", migration: c"), ("c", ""))))
    chained = load_catalog([path])
    assert [m.id for m in lifecycle.migration_chain(chained.lookup("a"), chained)] == ["b", "c"]
    assert lifecycle.successor(chained.lookup("a"), chained).id == "c"


def test_migration_chain_terminates_on_a_loop_the_loader_did_not_see(catalog):
    a = dataclasses.replace(catalog.lookup("cogito:32b"), id="a", migration="b")
    b = dataclasses.replace(a, id="b", migration="a")
    looped = Catalog((a, b), {"a": a, "b": b})
    assert [m.id for m in lifecycle.migration_chain(a, looped)] == ["b"]
