from pathlib import Path

import pytest
from llmaas.catalog.entries import CatalogError, load_catalog
from llmaas.stack.paths import DEFAULT_CATALOG


def test_default_catalog_loads_with_aliases():
    catalog = load_catalog([DEFAULT_CATALOG])
    entry = catalog.lookup("smollm2-135m-instruct")
    assert entry is not None and entry.id == "smollm2:135m" and "<|im_start|>" in entry.chat_template
    assert entry.created > 1_700_000_000


@pytest.mark.parametrize("body,message", [
    ("models: 3", "'models' list"),
    ("models: [{id: a, editor: e, type: nonsense, production_date: 2025-01-01, licence: x, max_model_len: 9}]",
     "type 'nonsense'"),
    ("models: [{id: a, editor: e, type: chat, licence: x, max_model_len: 9, default_max_tokens: 9}]",
     "production_date"),
    ("models: [{id: a, editor: e, type: chat, production_date: 2025-01-01, licence: x, max_model_len: '9'}]",
     "must be int"),
])
def test_bad_files_are_refused_with_a_clear_error(tmp_path: Path, body: str, message: str):
    path = tmp_path / "c.yaml"
    path.write_text(body)
    with pytest.raises(CatalogError, match=message):
        load_catalog([path])


def test_duplicate_names_are_refused(tmp_path: Path):
    path = tmp_path / "c.yaml"
    path.write_text("models:\n" + "".join(
        f"  - {{id: {i}, editor: e, type: chat, production_date: 2025-01-01, licence: x, max_model_len: 9,"
        f" default_max_tokens: 9, aliases: [same]}}\n" for i in ("a", "b")))
    with pytest.raises(CatalogError, match="names two models"):
        load_catalog([path])
