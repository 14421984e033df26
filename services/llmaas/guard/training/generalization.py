"""Leave-one-source-out (issue 19): for each public set or generator, a model trained without it (and without
anything derived from it: evasion variants, documents), tested on all of its rows. A random split of the same
sources says how well the guard knows what it was trained on; this says how it does on a kind of text it never saw,
which is what a new attack (or a new tenant's honest traffic) is.

Each held-out source costs one training (about 30 s of CPU). The threshold is the one the model chose on its own
training data: nothing here is tuned on the held-out source.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from llmaas.guard.evaluation import Confusion, Report, evaluate
from llmaas.guard.training.corpus import Sample, corpus, source_group
from llmaas.guard.training.train import train
from llmaas.guard.verdict import Detector

# Every source group of the corpus (corpus.source_group), attacks first. BIPIA's benign host documents are kept in
# training when its injected instructions are held out (the document head needs honest documents to learn from).
SOURCES = ("deepset", "jailbreak-templates", "bipia", "phrasebook", "notinject", "wildguard", "french-benign",
           "everyday", "llmaas-benign", "third-party", "llmaas-documents", "llmaas-narratives")


@dataclass
class HeldOut:
    source: str
    report: Report


@dataclass
class Generalization:
    held_out: list[HeldOut] = field(default_factory=list)

    def pooled(self) -> Confusion:
        total = Confusion()
        for h in self.held_out:
            _add(total, h.report.overall)
        return total

    def pooled_by(self, dimension: str) -> dict[str, Confusion]:
        """Every held-out source's rows pooled by one of evaluation.DIMENSIONS (language; kind and language: the
        false positives of prompts and of documents apart)."""
        out: dict[str, Confusion] = {}
        for h in self.held_out:
            for key, c in h.report.by[dimension].items():
                _add(out.setdefault(key, Confusion()), c)
        return out


def _add(total: Confusion, c: Confusion) -> None:
    total.tp, total.fn, total.fp, total.tn = total.tp + c.tp, total.fn + c.fn, total.fp + c.fp, total.tn + c.tn


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def rows_of(samples: list[Sample], source: str) -> list[Sample]:
    return [s for s in samples if source_group(s.source) == source and s.kind in ("prompt", "document")]


def leave_one_source_out(data_dir: Path | None = None, sources: tuple[str, ...] = SOURCES, threshold: float = 0.5,
                         progress: Callable[[str], None] = lambda _: None) -> Generalization:
    everything = corpus(data_dir)
    result = Generalization()
    for source in sources:
        rows = rows_of(everything, source)
        if not rows:
            continue
        progress(f"training without {source} ({len(rows)} rows held out)")
        with tempfile.TemporaryDirectory(prefix=f"guard-loso-{source}-") as directory:
            model = train(Path(directory), data_dir, exclude=frozenset({source}))
            report = evaluate(rows, Detector(model), threshold)
        result.held_out.append(HeldOut(source, report))
        c = report.overall
        progress(f"  {source}: recall {_pct(c.recall)} of {c.attacks} attacks, FP {_pct(c.fp_rate)} of {c.benign}")
    return result
