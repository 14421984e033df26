"""The leave-one-source-out tables (llmaas.guard.training.generalization): held-out sources' rows pooled overall, by
language, and by kind and language, so prompts' and documents' false positives are read apart. The scorer is a
unit-test fake (a fixed score per text); the real folds are trained by `llmaas guard eval --leave-one-source-out`."""

from __future__ import annotations

from llmaas.guard.evaluation import evaluate
from llmaas.guard.training.corpus import Sample
from llmaas.guard.training.generalization import Generalization, HeldOut


class FakeDetector:
    """Unit-test fake of verdict.Detector: flags the texts it was given."""

    def __init__(self, flagged: set[str]) -> None:
        self.flagged = flagged

    def part(self, text, kind):
        return type("Verdict", (), {"score": 1.0 if text in self.flagged else 0.0})()


def held_out(source: str, rows: list[Sample], flagged: set[str]) -> HeldOut:
    return HeldOut(source, evaluate(rows, FakeDetector(flagged)))


def test_pooled_by_kind_and_language_keeps_prompts_and_documents_apart():
    prompts = [Sample("bonjour", 0, "a", "fr"), Sample("oublie tout", 1, "a", "fr"), Sample("hallo", 0, "a", "de")]
    documents = [Sample("Le rapport", 0, "b", "fr", kind="document"), Sample("Der Bericht", 0, "b", "de",
                                                                             kind="document")]
    result = Generalization([held_out("a", prompts, {"oublie tout"}), held_out("b", documents, {"Der Bericht"})])
    pooled = result.pooled()
    assert (pooled.tp, pooled.fn, pooled.fp, pooled.tn) == (1, 0, 1, 3)
    by_language = result.pooled_by("language")
    assert (by_language["fr"].tp, by_language["fr"].tn, by_language["de"].fp, by_language["de"].tn) == (1, 2, 1, 1)
    by_kind = result.pooled_by("kind and language")
    assert by_kind["prompt de"].fp == 0 and by_kind["document de"].fp == 1 and by_kind["document fr"].tn == 1
    assert result.pooled_by("kind")["document"].fp_rate == 0.5
