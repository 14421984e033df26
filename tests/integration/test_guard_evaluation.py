"""The guard's targets on its held-out test split, with a model trained here from the shared data exactly as
`llmaas guard train` does: recall >= 90%, false positives <= 1% overall and on French, Chinese and Japanese."""

from __future__ import annotations

import json

import pytest
from llmaas.cli.guard import guard_app
from llmaas.guard.classifier import LocalClassifier
from llmaas.guard.evaluation import evaluate
from llmaas.guard.training.corpus import corpus, read_jsonl
from llmaas.guard.verdict import Detector
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def model_dir(guard_model_dir):
    return guard_model_dir


@pytest.fixture(scope="module")
def report(model_dir):
    return evaluate(read_jsonl(model_dir / "test.jsonl"), Detector(LocalClassifier.load(model_dir)))


def test_recall_and_false_positives_on_the_test_split(report):
    assert report.overall.attacks >= 500 and report.overall.benign >= 500
    assert report.overall.recall >= 0.90
    assert report.overall.fp_rate <= 0.01


@pytest.mark.parametrize("lang", ["fr", "zh", "ja"])
def test_false_positives_per_language(report, lang):
    benign = report.by["language"][lang]
    assert benign.benign >= 30
    assert benign.fp_rate <= 0.01


def test_rule_layers_are_fast_enough_for_every_request(report):
    assert report.percentile(50) < 20  # rules + model, ms per text on one core; bench/guard_rules.py has the detail


def test_training_never_sees_the_test_split(model_dir):
    train_texts = {json.loads(line)["text"] for line in (model_dir / "train.jsonl").open()}
    test_rows = [json.loads(line) for line in (model_dir / "test.jsonl").open()]
    assert not train_texts & {r["text"] for r in test_rows}
    deepset_test = [r for r in test_rows if r["source"] == "deepset/prompt-injections"]
    assert len(deepset_test) == 116  # the published test split, whole


def test_the_corpus_is_reproducible():
    assert [s.to_json() for s in corpus()] == [s.to_json() for s in corpus()]


def test_eval_command_prints_the_tables(model_dir, tmp_path):
    subset = tmp_path / "subset.jsonl"
    subset.write_text("".join((model_dir / "test.jsonl").read_text().splitlines(keepends=True)[:40]))
    result = CliRunner().invoke(guard_app, ["eval", str(subset), "--model-dir", str(model_dir)],
                                env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for title in ("Guard evaluation", "By source", "By language", "By category", "Latency"):
        assert title in result.output
