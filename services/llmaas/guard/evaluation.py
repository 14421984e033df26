"""`llmaas guard eval`: recall, false-positive rate and confusion per source, language and category, and the
latency distribution, for any JSONL of `text` + `label` rows (optional `source`, `lang`, `category`, `kind`)."""

from __future__ import annotations

import statistics
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

from llmaas.guard.training.corpus import Sample
from llmaas.guard.training.everyday import SOURCE as EVERYDAY_SOURCE
from llmaas.guard.training.third_party import SOURCE as THIRD_PARTY_SOURCE
from llmaas.guard.verdict import DOCUMENT, PROMPT, Detector


@dataclass
class Confusion:
    tp: int = 0
    fn: int = 0
    fp: int = 0
    tn: int = 0

    def add(self, label: int, flagged: bool) -> None:
        if label:
            self.tp, self.fn = self.tp + flagged, self.fn + (not flagged)
        else:
            self.fp, self.tn = self.fp + flagged, self.tn + (not flagged)

    @property
    def attacks(self) -> int:
        return self.tp + self.fn

    @property
    def benign(self) -> int:
        return self.fp + self.tn

    @property
    def recall(self) -> float | None:
        return self.tp / self.attacks if self.attacks else None

    @property
    def fp_rate(self) -> float | None:
        return self.fp / self.benign if self.benign else None


@dataclass
class Report:
    overall: Confusion = field(default_factory=Confusion)
    by: dict[str, dict[str, Confusion]] = field(default_factory=lambda: defaultdict(lambda: defaultdict(Confusion)))
    latencies_ms: list[float] = field(default_factory=list)
    # The everyday benign corpus's rows (issue 21), by language, and their scores: the false positives users see.
    everyday: dict[str, Confusion] = field(default_factory=lambda: defaultdict(Confusion))
    everyday_scores: list[tuple[Sample, float]] = field(default_factory=list)
    # Ordinary third-party text (tool results, snippets...) checked as documents, by language (issues 15 and 21),
    # and every document row (attacks: instructions injected into documents): its recall next to them.
    third_party: dict[str, Confusion] = field(default_factory=lambda: defaultdict(Confusion))
    documents: Confusion = field(default_factory=Confusion)

    def translated_means(self) -> dict[str, float]:
        """Mean score per language over the everyday requests present in every language evaluated (the same
        request translated): benign text in one language should not score higher than in another."""
        from llmaas.guard.training import everyday

        group_of = everyday.groups()
        by_group: dict[str, dict[str, float]] = defaultdict(dict)
        for sample, score in self.everyday_scores:
            if sample.text in group_of:
                by_group[group_of[sample.text]][sample.lang] = score
        languages = {lang for scores in by_group.values() for lang in scores}
        complete = [scores for scores in by_group.values() if set(scores) == languages]
        return {lang: statistics.fmean(s[lang] for s in complete) for lang in sorted(languages)} if complete else {}

    @property
    def everyday_overall(self) -> Confusion:
        return _benign_total(self.everyday.values())

    @property
    def third_party_overall(self) -> Confusion:
        return _benign_total(self.third_party.values())

    def percentile(self, p: float) -> float:
        if len(self.latencies_ms) < 2:
            return self.latencies_ms[0] if self.latencies_ms else 0.0
        return statistics.quantiles(self.latencies_ms, n=1000, method="inclusive")[int(p * 10) - 1]


def _benign_total(confusions) -> Confusion:
    total = Confusion()
    for c in confusions:
        total.fp, total.tn = total.fp + c.fp, total.tn + c.tn
    return total


DIMENSIONS: dict[str, Callable[[Sample], str]] = {
    "source": lambda s: s.source,
    "language": lambda s: s.lang or "?",
    "category": lambda s: s.category or ("benign" if s.label == 0 else "-"),
    "kind": lambda s: s.kind,
    "kind and language": lambda s: f"{s.kind} {s.lang or '?'}",
}


def evaluate(samples: list[Sample], detector: Detector, threshold: float = 0.5) -> Report:
    report = Report()
    for sample in samples:
        kind = DOCUMENT if sample.kind == "document" else PROMPT
        t0 = time.perf_counter()
        verdict = detector.part(sample.text, kind)
        report.latencies_ms.append((time.perf_counter() - t0) * 1000)
        flagged = verdict.score >= threshold
        report.overall.add(sample.label, flagged)
        for name, key in DIMENSIONS.items():
            report.by[name][key(sample)].add(sample.label, flagged)
        if sample.source == EVERYDAY_SOURCE:
            report.everyday[sample.lang].add(sample.label, flagged)
            report.everyday_scores.append((sample, verdict.score))
        if kind == DOCUMENT:
            report.documents.add(sample.label, flagged)
        if sample.source == THIRD_PARTY_SOURCE:
            report.third_party[sample.lang].add(sample.label, flagged)
    return report
