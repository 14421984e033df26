"""One verdict over every part of a request: rules and the learned layer per part, behaviour across requests.

Scores combine as a noisy OR (1 - Π(1 - s)): independent weak signals add up, and one certain finding is enough.
Only text the end user or a third party controls is inspected: user messages as prompts, tool results and documents
as documents. The tenant's own system prompt is full of instructions by design and is not.
"""

from __future__ import annotations

from dataclasses import dataclass

from llmaas.guard import rules
from llmaas.guard.classifier import Classifier
from llmaas.guard.rules import Finding

PROMPT, DOCUMENT = "prompt", "document"
# A classifier score under this is not worth reporting (it still counts in the score).
REPORT_FLOOR = 0.1


def combine(scores: list[float]) -> float:
    remaining = 1.0
    for s in scores:
        remaining *= 1.0 - min(1.0, max(0.0, s))
    return 1.0 - remaining


@dataclass(frozen=True)
class Verdict:
    score: float
    findings: tuple[Finding, ...]

    @property
    def reasons(self) -> list[str]:
        return sorted({f.reason for f in self.findings if f.score >= REPORT_FLOOR})

    @property
    def layers(self) -> list[str]:
        return sorted({f.layer for f in self.findings if f.score >= REPORT_FLOOR})


class Detector:
    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    @property
    def remote(self) -> bool:
        """Whether a verdict waits on another process (see Classifier.remote)."""
        return self.classifier.remote

    def part(self, text: str, kind: str = PROMPT) -> Verdict:
        analysis = rules.analyse(text, document=kind == DOCUMENT)
        learned = self.classifier.score(analysis.forms, analysis.pieces)
        findings = list(analysis.findings)
        if learned >= REPORT_FLOOR:
            findings.append(Finding("classifier", f"learned_{kind}_injection", round(learned, 4)))
        return Verdict(combine([f.score for f in findings]), tuple(findings))

    def request(self, parts: list[tuple[str, str]], extra: list[Finding] = ()) -> Verdict:
        """parts: (kind, text); extra: findings from outside the text (behaviour). The request's score is its
        worst part's, combined with the extra findings."""
        verdicts = [self.part(text, kind) for kind, text in parts if text.strip()]
        worst = max(verdicts, key=lambda v: v.score, default=Verdict(0.0, ()))
        findings = tuple(f for v in verdicts for f in v.findings) + tuple(extra)
        return Verdict(combine([worst.score, *(f.score for f in extra)]), findings)
