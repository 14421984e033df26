"""Multilingual attacks composed from deploy/guard/data/attack-phrases.yaml: an intent phrase (override,
extraction, persona), optionally hidden behind an honest question, followed by a payload. Every list is split by a
hash of each phrase; a test attack is built only from test phrases."""

from __future__ import annotations

import random

import yaml

from llmaas.guard.training.corpus import GUARD_DATA_DIR, Sample, split_of

SEED = 20261123
PAYLOADS_PER_PHRASE = 4


def _split_lists(lists: dict[str, list[str]], split: str) -> dict[str, list[str]]:
    chosen = {name: [p for p in phrases if split_of(p) == split] for name, phrases in lists.items()}
    # A list too short to split keeps all its phrases on both sides (only carriers and payloads can be).
    return {name: chosen[name] or lists[name] for name in lists}


def attacks() -> list[Sample]:
    book = yaml.safe_load((GUARD_DATA_DIR / "attack-phrases.yaml").read_text(encoding="utf-8"))
    rng = random.Random(SEED)
    samples = []
    for lang, lists in book.items():
        sep = "" if lang in ("zh", "ja") else " "
        for split in ("train", "test"):
            own = _split_lists(lists, split)
            for intent in ("override", "extraction", "persona"):
                for phrase in (p for p in lists[intent] if split_of(p) == split):
                    texts = [phrase]
                    for payload in rng.sample(own["payload"], k=min(PAYLOADS_PER_PHRASE, len(own["payload"]))):
                        texts += [phrase + sep + payload, rng.choice(own["carrier"]) + sep + phrase + sep + payload]
                        if intent == "override":
                            texts.append(payload + sep + phrase)
                    samples += [Sample(t, 1, "llmaas/phrasebook", lang, intent, split=split) for t in texts]
    return samples
