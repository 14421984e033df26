"""Ordinary third-party text (issues 15 and 21): benign document pieces, reproducible, in six languages and every
kind a tool or a retriever returns, split by template so that the test part's wording is never trained on; the
reported texts and the rerank test set are never in it."""

import json
from collections import Counter
from pathlib import Path

from llmaas.guard.training import third_party
from llmaas.guard.training.corpus import corpus

RERANK_SET = Path(__file__).resolve().parents[1] / "data" / "rerank_labelled.json"


def test_six_languages_every_kind_and_a_test_part_large_enough_to_measure_one_percent():
    samples = third_party.samples()
    assert all(s.label == 0 and s.kind == "document" for s in samples)
    per_language = Counter((s.lang, s.split) for s in samples)
    for lang in third_party.LANGUAGES:
        assert per_language[lang, "train"] >= 150 and per_language[lang, "test"] >= 100
    assert {"tool-json", "tool-sentence", "snippet", "fact", "howto", "table", "code", "email",
            "meeting"} <= {s.category for s in samples}


def test_reproducible_and_split_by_template():
    third_party.pieces.cache_clear()
    again = third_party.pieces()
    third_party.pieces.cache_clear()
    assert [s.to_json() for s, _ in again] == [s.to_json() for s, _ in third_party.pieces()]
    split_of_template = {}
    for sample, template in third_party.pieces():
        assert split_of_template.setdefault(template, sample.split) == sample.split
    assert 0.35 <= sum(s == "test" for s in split_of_template.values()) / len(split_of_template) <= 0.45


def test_in_the_corpus_and_never_the_reported_texts_nor_the_rerank_test_set():
    ours = {s.text for s in corpus() if s.source == third_party.SOURCE}
    assert ours == {s.text for s in third_party.samples()}
    rerank = json.loads(RERANK_SET.read_text())["items"]
    kept_out = {t.casefold() for _, t in third_party.REGRESSION_PIECES}
    kept_out |= {d.casefold() for item in rerank for d in [item["query"], *item["documents"]]}
    assert not {t.casefold() for t in ours} & kept_out
