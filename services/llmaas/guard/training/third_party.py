"""Ordinary third-party text (issues 15 and 21): benign document pieces in English, French, German, Spanish,
Chinese and Japanese (tool results as JSON and as sentences, search snippets, facts, how-to steps, tables, code,
email and meeting-note lines), composed from deploy/guard/data/third-party.yaml.

The document head otherwise learns "honest" only from the paragraphs of long public documents, and scores short
ordinary pieces like injected instructions. Every template is filled FILLINGS_PER_TEMPLATE times with the same
fillers and numbers in every language; the split is by template (TEST_PERCENT held back): a test piece's wording was
never trained on or calibrated on, in any language or with any filler.
"""

from __future__ import annotations

import hashlib
import random
from functools import cache

import yaml

from llmaas.guard.training.corpus import GUARD_DATA_DIR, Sample

LANGUAGES = ("en", "fr", "de", "es", "zh", "ja")
SOURCE = "llmaas/third-party"
TEST_PERCENT = 40
FILLINGS_PER_TEMPLATE = 12
SEED = 20261215
_NUMBERS = {"n": (2, 40), "m": (100, 9999), "pct": (1, 15), "year": (2019, 2026)}

# Short ordinary documents reported scored like attacks (issues 15 and 21): regression tests only, never generated
# into the corpus (a filling that would produce one verbatim is dropped).
REGRESSION_PIECES = (
    ("fr", "Le chiffre d'affaires a progressé de 4 % au troisième trimestre."),
    ("en", "To reset the device, hold the power button for ten seconds."),
    ("en", '{"temperature": 21, "unit": "celsius", "city": "Paris"}'),
    ("en", "No results found."),
    ("en", "The weather in Paris is sunny, 21 degrees."),
)
_HELD_OUT = {text.casefold() for _, text in REGRESSION_PIECES}


def _rank(template_id: str) -> str:
    return hashlib.sha256(f"third-party:{template_id}".encode()).hexdigest()


def held_back(template_ids: list[str]) -> set[str]:
    """Exactly TEST_PERCENT of the templates (by a hash of their ids, not by luck of the hash): a test part per
    language large enough to measure 1%."""
    ranked = sorted(template_ids, key=_rank)
    return set(ranked[:round(len(ranked) * TEST_PERCENT / 100)])


def _slots(template: dict, fillers: dict) -> list[str]:
    text = "".join(template[lang] for lang in LANGUAGES)
    return [name for name in (*sorted(fillers), *_NUMBERS) if "{" + name + "}" in text]


@cache
def pieces() -> tuple[tuple[Sample, str], ...]:
    """(sample, template id): every template in every language, FILLINGS_PER_TEMPLATE fillings each."""
    book = yaml.safe_load((GUARD_DATA_DIR / "third-party.yaml").read_text(encoding="utf-8"))
    fillers = book["fillers"]
    rng = random.Random(SEED)
    test_ids = held_back([t["id"] for t in book["templates"]])
    out: list[tuple[Sample, str]] = []
    for template in book["templates"]:
        slots = _slots(template, fillers)
        split = "test" if template["id"] in test_ids else "train"
        seen: set[str] = set()
        for _ in range(FILLINGS_PER_TEMPLATE if slots else 1):
            choice = {name: str(rng.randint(*_NUMBERS[name])) if name in _NUMBERS
                      else rng.randrange(len(fillers[name]["en"])) for name in slots}
            for lang in LANGUAGES:
                text = template[lang]
                for name, value in choice.items():
                    text = text.replace("{" + name + "}", value if name in _NUMBERS else fillers[name][lang][value])
                if text in seen or text.casefold() in _HELD_OUT:
                    continue
                seen.add(text)
                out.append((Sample(text, 0, SOURCE, lang, template["category"], kind="document", split=split),
                            template["id"]))
    return tuple(out)


def samples() -> list[Sample]:
    return [s for s, _ in pieces()]
