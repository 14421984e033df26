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
from pathlib import Path

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold

from llmaas.guard import features, normalize
from llmaas.guard.classifier import LinearHead, LocalClassifier
from llmaas.guard.rules import analyse
from llmaas.guard.training.corpus import Sample, base_samples, corpus, write_jsonl
from llmaas.stack.paths import DEPLOY_DIR

DEFAULT_MODEL_DIR = DEPLOY_DIR / "guard" / "model"
SEED = 5
TARGET_FP = 0.004
FOLDS = 5
# Honest requests to an assistant, inside a document, are injected instructions: a sample of them teaches the
# document head what an instruction looks like in any language.
PROMPTS_AS_DOCUMENT_PIECES = 1500


def _fit(x, y: np.ndarray) -> LogisticRegression:
    model = LogisticRegression(C=8.0, class_weight="balanced", solver="liblinear", max_iter=1000, random_state=SEED)
    return model.fit(x, y)


def _threshold(x, y: np.ndarray) -> float:
    oof = np.zeros(len(y))
    for train_idx, held_idx in StratifiedKFold(FOLDS, shuffle=True, random_state=SEED).split(x, y):
        oof[held_idx] = _fit(x[train_idx], y[train_idx]).predict_proba(x[held_idx])[:, 1]
    benign = np.sort(oof[y == 0])
    allowed = int(TARGET_FP * len(benign))
    return float(min(0.99, max(0.5, benign[len(benign) - 1 - allowed] + 1e-6)))


def _head(texts: list[str], labels: list[int]) -> LinearHead:
    x_counts = features.counts(texts)
    idf = features.fit_idf(x_counts)
    x = features.tfidf(x_counts, idf)
    y = np.array(labels)
    model = _fit(x, y)
    return LinearHead(idf, model.coef_[0].astype(np.float32), float(model.intercept_[0]), _threshold(x, y))


def _prompt_forms(samples: list[Sample]) -> tuple[list[str], list[int]]:
    texts, labels = [], []
    for s in samples:
        # The model learns from what it will see at serving: the comparison form and every decoded payload.
        for form in analyse(s.text).forms:
            texts.append(form)
            labels.append(s.label)
    return texts, labels


def _document_pieces(documents: list[Sample], instructions: list[Sample],
                     prompts: list[Sample]) -> tuple[list[str], list[int]]:
    """Pieces of honest documents (0) against instructions: the injected ones and a sample of user requests (1)."""
    texts, labels = [], []
    for doc in (s for s in documents if s.label == 0):
        pieces = [normalize.comparison_form(p) for p in features.segments(doc.text)]
        texts += pieces
        labels += [0] * len(pieces)
    requests = random.Random(SEED).sample(prompts, k=min(PROMPTS_AS_DOCUMENT_PIECES, len(prompts)))
    for s in instructions + requests:
        texts.append(normalize.comparison_form(s.text))
        labels.append(1)
    return texts, labels


def train(model_dir: Path = DEFAULT_MODEL_DIR, data_dir: Path | None = None) -> LocalClassifier:
    samples = corpus(data_dir)
    train_split = [s for s in samples if s.split == "train"]
    prompts = [s for s in train_split if s.kind == "prompt"]
    documents = [s for s in train_split if s.kind == "document"]
    instructions = [s for s in base_samples(data_dir) if s.kind == "injected-instruction" and s.split == "train"]

    prompt_head = _head(*_prompt_forms(prompts))
    document_head = _head(*_document_pieces(documents, instructions, prompts))

    digest = hashlib.sha256("".join(s.to_json() for s in train_split).encode()).hexdigest()[:16]
    meta = {"train_samples": len(train_split), "train_digest": digest,
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

