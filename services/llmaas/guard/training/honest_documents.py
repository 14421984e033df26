"""Honest document pieces written for the project (issue 19): what retrieval and tools return, as free text rather
than templates (encyclopedia facts, news briefs, policies, release notes, API docs, FAQ answers, support replies,
emails, minutes, reviews, recipes, contract clauses, how-to steps, log explanations) in English, French, German,
Spanish, Chinese and Japanese, a quarter of them using the words attacks use in their honest senses.

Written independently of the third-party templates (third_party.py), so that each is a source the other is not:
held out one at a time (leave-one-source-out), the document head has honest text in every language to learn from.
One piece per line in deploy/guard/data/documents-<lang>.txt; split by a hash of the text (corpus.split_of).
"""

from __future__ import annotations

from functools import cache

from llmaas.guard.training.corpus import GUARD_DATA_DIR, Sample, split_of

LANGUAGES = ("en", "fr", "de", "es", "zh", "ja")
SOURCE = "llmaas/documents"


@cache
def _pieces() -> tuple[Sample, ...]:
    out = []
    for lang in LANGUAGES:
        for line in (GUARD_DATA_DIR / f"documents-{lang}.txt").read_text(encoding="utf-8").splitlines():
            if text := line.strip():
                out.append(Sample(text, 0, SOURCE, lang, kind="document", split=split_of(text)))
    return tuple(out)


def samples() -> list[Sample]:
    return list(_pieces())
