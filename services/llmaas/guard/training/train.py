"""`llmaas guard train`: fits the local classifier on the train split, reproducibly (fixed seeds, deterministic
solver, hashed features), and writes the model plus the train/test splits it used next to it.

Decision thresholds come from out-of-fold scores on the train split only: the lowest threshold whose false-positive
rate on honest train prompts stays under TARGET_FP. The test split is never looked at here.
"""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedGroupKFold

from llmaas.guard import features, normalize
from llmaas.guard.classifier import LinearHead, LocalClassifier
from llmaas.guard.rules import analyse
from llmaas.guard.training import everyday, third_party
from llmaas.guard.training.corpus import Sample, base_samples, corpus, source_group, write_jsonl
from llmaas.stack.paths import DEPLOY_DIR

DEFAULT_MODEL_DIR = DEPLOY_DIR / "guard" / "model"
SEED = 5
TARGET_FP = 0.004
# Precision first (issue 21): the threshold also keeps out-of-fold false positives under this in every language
# with enough honest training prompts, so that no language pays for another's attacks.
TARGET_FP_PER_LANGUAGE = 0.005
MIN_BENIGN_PER_LANGUAGE = 100
# And on the everyday prompts of the calibration part (everyday.py), what users send most: the test part's target.
TARGET_FP_EVERYDAY = 0.005
EVERYDAY_GROUP = "everyday:"
# The ordinary third-party pieces (third_party.py) of one template are held out together when choosing the document
# head's threshold, and the same per-language target holds on them (their test part's target is 1% per language).
THIRD_PARTY_GROUP = "third-party:"
# The public attacks are mostly German and English, the honest prompts mostly English and French: an honest prompt
# in a language with more attacks than honest prompts weighs attacks/honest (at most this), so that a language's
# words are no evidence of an attack.
MAX_LANGUAGE_WEIGHT = 5.0
FOLDS = 5
# Honest requests to an assistant, inside a document, are injected instructions: a sample of them teaches the
# document head what an instruction looks like in any language.
PROMPTS_AS_DOCUMENT_PIECES = 1500


def _fit(x, y: np.ndarray, weights: np.ndarray | None = None) -> LogisticRegression:
    model = LogisticRegression(C=8.0, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=SEED)
    return model.fit(x, y, sample_weight=weights)


def language_weights(labels: list[int], langs: list[str]) -> np.ndarray:
    """Per row: 1, or for an honest row attacks/honest of its language (capped at MAX_LANGUAGE_WEIGHT)."""
    attacks = Counter(lang for lang, label in zip(langs, labels, strict=True) if label)
    honest = Counter(lang for lang, label in zip(langs, labels, strict=True) if not label)
    return np.array([1.0 if label else min(MAX_LANGUAGE_WEIGHT, max(1.0, attacks[lang] / honest[lang]))
                     for label, lang in zip(labels, langs, strict=True)])


def _quantile_threshold(benign: np.ndarray, target: float) -> float:
    benign = np.sort(benign)
    return float(benign[len(benign) - 1 - int(target * len(benign))] + 1e-6)


def _threshold(x, y: np.ndarray, weights: np.ndarray, langs: np.ndarray, groups: np.ndarray) -> float:
    """Out-of-fold, folds by group: the everyday prompts (or ordinary document pieces) of one template (every
    language, every filler) are held out together, as the test part holds them, so that the threshold is not
    chosen on near-copies."""
    oof = np.zeros(len(y))
    folds = StratifiedGroupKFold(FOLDS, shuffle=True, random_state=SEED)
    for train_idx, held_idx in folds.split(x, y, groups):
        oof[held_idx] = _fit(x[train_idx], y[train_idx], weights[train_idx]).predict_proba(x[held_idx])[:, 1]
    honest = y == 0
    threshold = _quantile_threshold(oof[honest], TARGET_FP)
    everyday_rows = honest & np.char.startswith(groups.astype(str), EVERYDAY_GROUP)
    if everyday_rows.any():
        threshold = max(threshold, _quantile_threshold(oof[everyday_rows], TARGET_FP_EVERYDAY))
    for lang in set(langs[honest]) - {""}:
        scores = oof[honest & (langs == lang)]
        if len(scores) >= MIN_BENIGN_PER_LANGUAGE:
            threshold = max(threshold, _quantile_threshold(scores, TARGET_FP_PER_LANGUAGE))
    return float(min(0.99, max(0.5, threshold)))


def _head(texts: list[str], labels: list[int], langs: list[str], groups: list[str]) -> LinearHead:
    x_counts = features.counts(texts)
    idf = features.fit_idf(x_counts)
    x = features.tfidf(x_counts, idf)
    y = np.array(labels)
    weights = language_weights(labels, langs)
    model = _fit(x, y, weights)
    return LinearHead(idf, model.coef_[0].astype(np.float32), float(model.intercept_[0]),
                      _threshold(x, y, weights, np.array(langs), np.array(groups)))


def _prompt_forms(samples: list[Sample]) -> tuple[list[str], list[int], list[str], list[str]]:
    """Every sample's forms, with its label, language and group (an everyday prompt's template; else its text)."""
    template_of = {text: EVERYDAY_GROUP + group.partition("#")[0] for text, group in everyday.groups().items()}
    texts, labels, langs, groups = [], [], [], []
    for s in samples:
        # The model learns from what it will see at serving: the comparison form and every decoded payload.
        for form in analyse(s.text).forms:
            texts.append(form)
            labels.append(s.label)
            langs.append(s.lang)
            groups.append(template_of.get(s.text, s.text))
    return texts, labels, langs, groups


def _document_pieces(documents: list[Sample], instructions: list[Sample],
                     prompts: list[Sample]) -> tuple[list[str], list[int], list[str], list[str]]:
    """Pieces of honest documents (0): the public documents' paragraphs and the ordinary third-party pieces
    (tool results, snippets, facts, how-to steps, tables, code, mail lines in six languages), against instructions:
    the injected ones and a sample of user requests (1). With each its language and group (a document, a
    third-party template, else the text itself)."""
    template_of = {s.text: THIRD_PARTY_GROUP + template for s, template in third_party.pieces()}
    texts, labels, langs, groups = [], [], [], []
    for doc in (s for s in documents if s.label == 0):
        pieces = [normalize.comparison_form(p) for p in features.segments(doc.text)]
        texts += pieces
        labels += [0] * len(pieces)
        langs += [doc.lang] * len(pieces)
        groups += [template_of.get(doc.text, doc.text)] * len(pieces)
    requests = random.Random(SEED).sample(prompts, k=min(PROMPTS_AS_DOCUMENT_PIECES, len(prompts)))
    for s in instructions + requests:
        texts.append(normalize.comparison_form(s.text))
        labels.append(1)
        langs.append(s.lang)
        groups.append(s.text)
    return texts, labels, langs, groups


def train(model_dir: Path = DEFAULT_MODEL_DIR, data_dir: Path | None = None,
          exclude: frozenset[str] = frozenset()) -> LocalClassifier:
    """exclude: source groups (corpus.source_group) trained without, for leave-one-source-out evaluation."""
    samples = corpus(data_dir, exclude)
    train_split = [s for s in samples if s.split == "train"]
    prompts = [s for s in train_split if s.kind == "prompt"]
    documents = [s for s in train_split if s.kind == "document"]
    instructions = [s for s in base_samples(data_dir) if s.kind == "injected-instruction" and s.split == "train"
                    and source_group(s.source) not in exclude]

    prompt_head = _head(*_prompt_forms(prompts))
    document_head = _head(*_document_pieces(documents, instructions, prompts))

    digest = hashlib.sha256("".join(s.to_json() for s in train_split).encode()).hexdigest()[:16]
    meta = {"train_samples": len(train_split), "train_digest": digest, "excluded_sources": sorted(exclude),
            "thresholds": {"prompt": prompt_head.threshold, "document": document_head.threshold}}
    model = LocalClassifier({"prompt": prompt_head, "document": document_head}, meta)
    # Written aside then moved into place: a guard starting meanwhile never loads half a model.
    model_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=model_dir))
    model.save(staging)
    write_jsonl(train_split, staging / "train.jsonl")
    write_jsonl([s for s in samples if s.split == "test"], staging / "test.jsonl")
    for name in ("model.npz", "train.jsonl", "test.jsonl", "model.json"):  # model.json last: it marks completion
        os.replace(staging / name, model_dir / name)
    shutil.rmtree(staging, ignore_errors=True)
    return model

