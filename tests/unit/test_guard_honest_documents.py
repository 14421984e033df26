"""The project's honest document sets (issue 19) and the leave-one-source-out list that must hold each out."""

import re
from collections import Counter

from llmaas.guard.training import honest_documents
from llmaas.guard.training.corpus import corpus, source_group
from llmaas.guard.training.generalization import SOURCES

# What a narrative must never contain: a question or a request to its reader (the set teaches the document head
# that statements are honest, not that instructions are).
_ADDRESSED = re.compile(r"[?？]|\b(please|bitte|por favor|s'il vous plaît)\b|请您|ください", re.IGNORECASE)


def test_each_set_covers_six_languages_as_honest_documents():
    per_set = Counter((s.source, s.lang) for s in honest_documents.samples())
    for source in honest_documents.SETS.values():
        assert {lang for src, lang in per_set if src == source} == set(honest_documents.LANGUAGES)
        assert min(n for (src, _), n in per_set.items() if src == source) >= 50
    assert all(s.label == 0 and s.kind == "document" for s in honest_documents.samples())


def test_narratives_address_nobody():
    narratives = [s.text for s in honest_documents.samples() if s.source == honest_documents.SETS["narratives"]]
    assert narratives and not [t for t in narratives if _ADDRESSED.search(t)]


def test_every_source_of_the_corpus_is_held_out_in_turn():
    # Derived rows go with their source (evasion variants), and BIPIA's host documents stay in training (the
    # document head needs honest documents): everything else must be a leave-one-source-out fold.
    groups = {source_group(s.source) for s in corpus()} - {"llmaas/evasion", "bipia-documents"}
    assert groups == set(SOURCES)
