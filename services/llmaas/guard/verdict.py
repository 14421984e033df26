"""One verdict over every part of a request: rules and the learned layer per part, behaviour across requests.

Scores combine as a noisy OR (1 - Π(1 - s)): independent weak signals add up, and one certain finding is enough.
Only text the end user or a third party controls is inspected: user messages as prompts, tool results and documents
as documents. The tenant's own system prompt is full of instructions by design and is not.

What a request may cost is bounded (budget.py): the characters analysed, chunks of a long text analysed one by one
(in a worker process, offload.py, or on the event loop, yielding it between two), a time budget; what is left unread
is a finding of score 1.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from llmaas.guard import budget as limits
from llmaas.guard import rules
from llmaas.guard.budget import Budget
from llmaas.guard.classifier import Classifier
from llmaas.guard.normalize import Prepared
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


def _has_text(text: str) -> bool:
    return bool(text) and not text.isspace()  # stops at the first non-space: no copy of a huge text, as strip() makes


@dataclass
class Run:
    """One request's analysis as steps (a chunk of a part each), and what the steps found so far."""

    kinds: list[str]
    texts: list[str]
    steps: list[tuple[int, int, int]]  # (part, start, end)
    oversized: bool
    # Per part, its findings: a later chunk's finding only raises the score of the same (layer, reason), so that a
    # long text's chunks do not add up their weak findings.
    found: list[list[Finding]] = field(default_factory=list)
    done: int = 0
    incomplete: bool = False
    # normalize.prepare of parts, already known (the service's behavioural layer needs the newest user prompt's).
    prepared: dict[int, Prepared] = field(default_factory=dict)

    @property
    def heavy(self) -> bool:
        return len(self.steps) > 1

    def limit_findings(self) -> list[Finding]:
        return ([Finding("limits", limits.OVERSIZED, 1.0)] if self.oversized else []) + (
            [Finding("limits", limits.INCOMPLETE, 1.0)] if self.incomplete else [])


class Detector:
    def __init__(self, classifier: Classifier, budget: Budget = Budget(), offload=None) -> None:
        self.classifier = classifier
        self.budget = budget
        # llmaas.guard.offload.Offload: where the chunks of a long request are analysed (None: on the event loop,
        # yielding it between chunks).
        self.offload = offload

    @property
    def remote(self) -> bool:
        """Whether a verdict waits on another process (see Classifier.remote)."""
        return self.classifier.remote

    def chunk(self, text: str, kind: str, prepared: Prepared | None = None) -> list[Finding]:
        """The findings of one piece of text (a whole part, or a chunk of a long one); prepared: normalize.prepare
        of it, when known."""
        analysis = rules.analyse(text, document=kind == DOCUMENT, prepared=prepared)
        learned = self.classifier.score(analysis.forms, analysis.pieces)
        findings = list(analysis.findings)
        if learned >= REPORT_FLOOR:
            findings.append(Finding("classifier", f"learned_{kind}_injection", round(learned, 4)))
        return findings

    def part(self, text: str, kind: str = PROMPT) -> Verdict:
        return self.request([(kind, text)])

    def start(self, parts: list[tuple[str, str]], prepared: dict[int, Prepared] | None = None) -> Run:
        """The steps of a request's analysis, within the budget's bound on characters. parts: (kind, text);
        prepared: normalize.prepare of the parts the caller has it for, by index in parts."""
        kept = [(n, kind, text) for n, (kind, text) in enumerate(parts) if _has_text(text)]
        plan, oversized = limits.windows([len(text) for _, _, text in kept], self.budget.max_chars)
        steps = [(i, s, e) for i, (_, _, text) in enumerate(kept) for ws, we in plan[i]
                 for s, e in limits.chunks(text, ws, we, self.budget.chunk_chars)]
        known = {i: prepared[n] for i, (n, _, _) in enumerate(kept) if n in prepared} if prepared else {}
        return Run([k for _, k, _ in kept], [t for _, _, t in kept], steps, oversized, [[] for _ in kept],
                   prepared=known)

    @staticmethod
    def _next(run: Run) -> tuple[str, str]:
        """The run's next chunk: (text, kind)."""
        i, s, e = run.steps[run.done]
        text = run.texts[i]
        return (text if (s, e) == (0, len(text)) else text[s:e]), run.kinds[i]

    def step(self, run: Run) -> None:
        """Analyses the run's next chunk here."""
        i, s, e = run.steps[run.done]
        text = run.texts[i]
        if (s, e) == (0, len(text)):  # the whole part: it may be prepared already
            self._add(run, self.chunk(text, run.kinds[i], run.prepared.get(i)))
        else:
            self._add(run, self.chunk(text[s:e], run.kinds[i]))

    @staticmethod
    def _add(run: Run, findings: list[Finding]) -> None:
        found = run.found[run.steps[run.done][0]]
        if not found:
            found += findings
        else:
            at = {(f.layer, f.reason): k for k, f in enumerate(found)}
            for f in findings:
                k = at.get((f.layer, f.reason))
                if k is None:
                    at[f.layer, f.reason] = len(found)
                    found.append(f)
                elif f.score > found[k].score:
                    found[k] = f
        run.done += 1

    def verdict(self, run: Run, extra: list[Finding] = ()) -> Verdict:
        """parts' verdicts: the request's score is its worst part's, combined with the extra findings (behaviour)
        and what the budget left unread."""
        verdicts = []
        for found in run.found:
            findings = tuple(found)
            verdicts.append(Verdict(combine([f.score for f in findings]), findings))
        worst = max(verdicts, key=lambda v: v.score, default=Verdict(0.0, ()))
        extra = (*extra, *run.limit_findings())
        findings = tuple(f for v in verdicts for f in v.findings) + tuple(extra)
        return Verdict(combine([worst.score, *(f.score for f in extra)]), findings)

    def request(self, parts: list[tuple[str, str]], extra: list[Finding] = ()) -> Verdict:
        """parts: (kind, text); extra: findings from outside the text (behaviour). Bounded in characters, not in
        time (the service uses check())."""
        run = self.start(parts)
        while run.done < len(run.steps):
            self.step(run)
        return self.verdict(run, extra)

    async def check(self, run: Run, extra: list[Finding] = (), deadline: float | None = None) -> Verdict:
        """The verdict of a started run within the budget's time: the run's own analysis time (WORK_SECONDS) and
        `deadline` (time.monotonic()). A run of one chunk is analysed here (a remote classifier's round trip in a
        thread: the loop must not wait on it); the chunks of a longer one in the offload's worker process, or here,
        giving the event loop back between two chunks."""
        work = 0.0
        offload = self.offload if run.heavy else None
        while run.done < len(run.steps):
            if run.done:
                if offload is None:
                    await asyncio.sleep(0)
                if work > self.budget.work_seconds or (deadline is not None and time.monotonic() > deadline):
                    run.incomplete = True
                    break
            t0 = time.perf_counter()
            if offload is not None:
                try:
                    findings, cpu = await offload.chunk(*self._next(run))
                except BrokenProcessPool:  # no worker could be started: here, as without one
                    offload = None
                    continue
                self._add(run, findings)
                work += cpu
                continue
            if self.remote:
                await asyncio.to_thread(self.step, run)
            else:
                self.step(run)
            work += time.perf_counter() - t0
        return self.verdict(run, extra)
