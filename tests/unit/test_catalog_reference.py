"""deploy/catalog/reference.yaml: the reference catalogue (models.md) and its lifecycle table, loaded as data."""

import collections
import datetime as dt
from pathlib import Path

import pytest
from llmaas.catalog.entries import UNKNOWN_PRODUCTION_DATE, CatalogError, load_catalog
from llmaas.stack.paths import DEFAULT_CATALOG

REFERENCE = Path(__file__).resolve().parents[2] / "deploy" / "catalog" / "reference.yaml"


@pytest.fixture(scope="module")
def catalog():
    return load_catalog([DEFAULT_CATALOG, REFERENCE])


def test_reference_holds_the_lifecycle_table_and_the_deprecated_list(catalog):
    local = {m.id for m in load_catalog([DEFAULT_CATALOG]).models}  # the models served locally
    reference = [m for m in catalog.models if m.id not in local]
    assert len(reference) == 100
    assert len([m for m in reference if not m.deprecated]) == 58  # the projected schedule's rows
    assert len([m for m in reference if m.deprecated]) == 42
    assert all(m.end_of_support is not None for m in reference)
    assert not any(m.triton_model for m in reference)  # never listed by /v1/models here
    assert {m.id for m in reference if m.lts} == {
        "qwen3:0.6b", "bge-m3:567m", "gpt-oss:120b", "granite-embedding:278m", "llama3.3:70b", "qwen3-2507:235b",
        "qwen3-2507-think:4b"}
    assert collections.Counter(m.type for m in reference if not m.deprecated) == {
        "chat": 30, "vision": 10, "embedding": 6, "rerank": 4, "translation": 3, "safety": 2, "ocr": 1, "audio": 1,
        "image": 1}


@pytest.mark.parametrize("model,editor,dmp,dsp,lts,migration", [
    ("cogito:32b", "Deep Cogito", dt.date(2025, 6, 13), dt.date(2026, 6, 30), False, "gpt-oss:120b"),
    ("gpt-oss:120b", "OpenAI", dt.date(2025, 11, 11), dt.date(2027, 12, 30), True, ""),
    ("qwen3:0.6b", "Qwen Team", dt.date(2025, 6, 13), dt.date(2026, 12, 30), True, ""),
    ("embeddinggemma:300m", "Google", dt.date(2025, 9, 10), dt.date(2026, 6, 30), False, ""),
    ("devstral-small-2:24b", "Mistral AI & All Hands AI", dt.date(2026, 2, 2), dt.date(2026, 9, 30), False, ""),
    ("nvidia/llama-nemotron-rerank-vl-1b-v2", "NVIDIA", dt.date(2026, 5, 13), dt.date(2027, 6, 30), False, ""),
    ("qwen3-2507-think:4b", "Qwen Team", dt.date(2025, 8, 31), dt.date(2027, 12, 30), True, ""),
])
def test_lifecycle_rows(catalog, model, editor, dmp, dsp, lts, migration):
    entry = catalog.lookup(model)
    assert (entry.editor, entry.production_date, entry.end_of_support, entry.lts, entry.migration) == (
        editor, dmp, dsp, lts, migration)
    assert not entry.deprecated


def test_specs_from_models_md(catalog):
    cogito = catalog.lookup("cogito:32b")
    assert (cogito.parameters, cogito.max_model_len, cogito.speed_tokens_per_second, cogito.kwh_per_million_tokens,
            cogito.licence, cogito.capabilities) == (
        "32B", 32000, 21, 6.32, "LLAMA 3.2 Community License", ("tools", "reasoning"))
    vision = catalog.lookup("qwen3-vl:8b")
    assert vision.type == "vision" and "vision" in vision.capabilities and vision.max_model_len == 250000
    embedding = catalog.lookup("bge-m3:567m")
    assert (embedding.type, embedding.capabilities, embedding.licence, embedding.max_model_len) == (
        "embedding", (), "MIT", 8192)
    guardian = catalog.lookup("granite3-guardian:8b")
    assert guardian.type == "safety" and guardian.capabilities == ("safety",)
    assert catalog.lookup("mistral-small4:119b").capabilities == ("tools", "vision", "safety")
    assert catalog.lookup("deepseek-ocr").type == "ocr"
    assert catalog.lookup("voxtral").type == "audio" and catalog.lookup("z-image:16b").type == "image"
    assert catalog.lookup("translategemma:4b").type == "translation"
    reranker = catalog.lookup("qwen3-reranker:4b")  # "N/A" speed and consumption are omitted, not zero
    assert reranker.type == "rerank" and reranker.speed_tokens_per_second is None
    assert reranker.kwh_per_million_tokens is None


def test_deprecated_models_carry_only_what_the_list_gives(catalog):
    entry = catalog.lookup("deepseek-r1:671b")
    assert entry.deprecated and entry.end_of_support == dt.date(2025, 10, 17)
    assert entry.production_date == UNKNOWN_PRODUCTION_DATE and entry.editor == "" and entry.max_model_len == 0
    assert catalog.lookup("qwen2.5vl:72b").type == "vision"
    assert catalog.lookup("devstral:24b").end_of_support == dt.date(2026, 3, 30)


def _write(tmp_path: Path, body: str) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(body)
    return path


BASE = "{id: %s, type: chat, production_date: 2025-01-01%s}"


@pytest.mark.parametrize("extra,message", [
    (", end_of_support: soon", "'end_of_support' must be a date"),
    (", end_of_support: 2024-01-01", "'end_of_support' is before production_date"),
    (", lts: 'yes'", "'lts' must be bool"),
    (", kwh_per_million_tokens: -1", "'kwh_per_million_tokens' must be a non-negative number"),
    (", speed_tokens_per_second: fast", "'speed_tokens_per_second' must be a non-negative number"),
    (", capabilities: [telepathy]", "'capabilities'"),
])
def test_bad_lifecycle_fields_are_refused(tmp_path, extra, message):
    with pytest.raises(CatalogError, match=message):
        load_catalog([_write(tmp_path, "models: [" + BASE % ("a", extra) + "]")])


def test_a_migration_must_name_a_loaded_model(tmp_path):
    with pytest.raises(CatalogError, match=r"'a'.*'migration'.*'nowhere' is not a model"):
        load_catalog([_write(tmp_path, "models: [" + BASE % ("a", ", migration: nowhere") + "]")])


def test_a_migration_may_name_a_model_of_another_file(tmp_path):
    first = tmp_path / "one.yaml"
    first.write_text("models: [" + BASE % ("a", ", migration: gpt-oss:120b") + "]")
    catalog = load_catalog([first, REFERENCE])
    assert catalog.lookup("a").migration == "gpt-oss:120b"


def test_migration_cycles_are_refused(tmp_path):
    body = "models: [" + ", ".join(BASE % (i, f", migration: {j}") for i, j in (("a", "b"), ("b", "c"), ("c", "a")))
    with pytest.raises(CatalogError, match="loops: a -> b -> c -> a"):
        load_catalog([_write(tmp_path, body + "]")])


def test_a_deployed_model_still_needs_editor_licence_and_context(tmp_path):
    body = "models: [{id: a, type: chat, production_date: 2025-01-01, licence: x, max_model_len: 9," \
           " default_max_tokens: 9, triton_model: t}]"
    with pytest.raises(CatalogError, match="missing field 'editor'"):
        load_catalog([_write(tmp_path, body)])
