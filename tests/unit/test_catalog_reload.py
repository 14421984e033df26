import os
from pathlib import Path

import pytest
from llmaas.catalog.entries import CatalogError
from llmaas.catalog.reload import CatalogSource

GOOD = ("models:\n  - {{id: {id}, editor: e, type: chat, production_date: 2025-01-01, licence: x, "
        "max_model_len: 9, default_max_tokens: 9}}\n")


def write(path: Path, text: str, tick: int) -> None:
    path.write_text(text)
    os.utime(path, ns=(tick * 10**9, tick * 10**9))  # a distinct mtime, whatever the filesystem's resolution


def test_change_is_picked_up_and_a_bad_file_keeps_the_previous_catalogue(tmp_path: Path):
    f = tmp_path / "c.yaml"
    write(f, GOOD.format(id="a"), 1)
    source = CatalogSource([f])
    assert source.refresh() is False  # nothing changed
    write(f, GOOD.format(id="b"), 2)
    assert source.refresh() is True and source.current.lookup("b") and not source.current.lookup("a")
    write(f, GOOD.format(id="c").replace("type: chat", "type: bogus"), 3)
    assert source.refresh() is False
    assert source.current.lookup("b") and "bogus" in source.last_error
    write(f, GOOD.format(id="d"), 4)
    assert source.refresh() is True and source.current.lookup("d") and source.last_error is None


def test_bad_catalogue_at_start_is_fatal(tmp_path: Path):
    f = tmp_path / "c.yaml"
    f.write_text("models: nope")
    with pytest.raises(CatalogError):
        CatalogSource([f])
