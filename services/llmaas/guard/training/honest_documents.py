"""Honest document pieces written for the project (issue 19): what retrieval and tools return, as free text rather
than templates, in English, French, German, Spanish, Chinese and Japanese, about a quarter of them using the words
attacks use in their honest senses. Two sets, each its own source (held out one at a time, leave-one-source-out):

- documents (deploy/guard/data/documents-<lang>.txt): encyclopedia facts, news briefs, policies, release notes,
  API docs, FAQ answers, support replies, emails, minutes, reviews, recipes, contract clauses, how-to steps, log
  explanations;
- narratives (deploy/guard/data/narratives-<lang>.txt): statements only, never addressed to the reader (news
  reports, encyclopedic and biographical text, reviews and letters telling what happened, minutes and incident
  reports in the past tense, sports, weather, results, abstracts, short stories). No imperative on purpose: honest
  advice to a human reads like an injected instruction, and teaching the document head that imperatives are honest
  cost it the injections in e-mails (measured, see the README).

Written independently of the third-party templates (third_party.py) and of each other, so that each is a source the
others are not: held out, the document head still has honest text in every language to learn from.
One piece per line; split by a hash of the text (corpus.split_of).
"""

from __future__ import annotations

from functools import cache

from llmaas.guard.training.corpus import GUARD_DATA_DIR, Sample, split_of

LANGUAGES = ("en", "fr", "de", "es", "zh", "ja")
# file stem -> source (corpus.source_group maps each to its own group)
SETS = {"documents": "llmaas/documents", "narratives": "llmaas/narratives"}


@cache
def _pieces() -> tuple[Sample, ...]:
    out = []
    for stem, source in SETS.items():
        for lang in LANGUAGES:
            for line in (GUARD_DATA_DIR / f"{stem}-{lang}.txt").read_text(encoding="utf-8").splitlines():
                if text := line.strip():
                    out.append(Sample(text, 0, source, lang, kind="document", split=split_of(text)))
    return tuple(out)


def samples() -> list[Sample]:
    return list(_pieces())
