"""The learned layer behind one interface: given a text's comparison forms, a score in [0, 1] where 0.5 is the
model's own decision threshold. Two implementations: the local model this project trains (`llmaas guard train`),
and a guard model served by Triton (e.g. granite3-guardian in the catalogue) for production."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from llmaas.guard import features

log = logging.getLogger("llmaas.guard")

MODEL_FORMAT = 3  # 3: word and character n-grams hashed by features.ngram_occurrences


class Classifier(Protocol):
    name: str
    # True when scoring waits on another process (Triton): the service then scores off its event loop.
    remote: bool

    def score(self, forms: list[str], pieces: list[str] | None = None) -> float:
        """Attack likelihood of a text given its comparison forms (the text, then decoded payloads) and, for a
        document or tool result, the comparison forms of its pieces (paragraphs)."""
        ...


def calibrated(p: float, threshold: float) -> float:
    """Maps a probability to a score whose 0.5 is the model's threshold, so rules and model share one scale."""
    if p >= threshold:
        return 0.5 + 0.5 * (p - threshold) / max(1e-9, 1 - threshold)
    return 0.5 * p / max(1e-9, threshold)


@dataclass(frozen=True)
class LinearHead:
    idf: np.ndarray
    coef: np.ndarray
    intercept: float
    threshold: float

    def probabilities(self, forms: list[str]) -> np.ndarray:
        logits = np.array([features.score(form, self.idf, self.coef) for form in forms]) + self.intercept
        return 1 / (1 + np.exp(-logits))


class LocalClassifier:
    """Logistic regressions over hashed n-grams: one head for prompts, one for pieces of documents."""

    name = "local"
    remote = False

    def __init__(self, heads: dict[str, LinearHead], meta: dict) -> None:
        self._heads = heads
        self.meta = meta

    def score(self, forms: list[str], pieces: list[str] | None = None) -> float:
        best = max(self.scores(forms, "prompt"))
        return max(best, *self.scores(pieces, "document")) if pieces else best

    def scores(self, texts: list[str], head: str = "prompt") -> list[float]:
        """Each comparison form's score by one head ("prompt" or "document"), its threshold at 0.5."""
        linear = self._heads[head]
        return [calibrated(float(p), linear.threshold) for p in linear.probabilities(texts)]

    def save(self, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        arrays = {f"{name}_{key}": value for name, head in self._heads.items()
                  for key, value in (("idf", head.idf), ("coef", head.coef))}
        np.savez_compressed(directory / "model.npz", **arrays)
        heads = {name: {"intercept": head.intercept, "threshold": head.threshold} for name, head in self._heads.items()}
        (directory / "model.json").write_text(json.dumps({"format": MODEL_FORMAT, "heads": heads, **self.meta},
                                                         indent=2, ensure_ascii=False))

    @classmethod
    def load(cls, directory: Path) -> LocalClassifier:
        meta = json.loads((directory / "model.json").read_text())
        if meta.get("format") != MODEL_FORMAT:
            raise ValueError(f"{directory} holds a guard model of another format; rerun `llmaas guard train`")
        with np.load(directory / "model.npz", allow_pickle=False) as arrays:
            heads = {name: LinearHead(arrays[f"{name}_idf"], arrays[f"{name}_coef"], float(h["intercept"]),
                                      float(h["threshold"])) for name, h in meta.pop("heads").items()}
        return cls(heads, meta)


class NoClassifier:
    """Rules only (no model built yet): scores nothing."""

    name = "none"
    remote = False

    def score(self, forms: list[str], pieces: list[str] | None = None) -> float:
        return 0.0


class PendingClassifier:
    """Stands in while a model is being built at start (rules only until then), so that the service answers
    health checks at once; `ready` swaps the real one in."""

    def __init__(self) -> None:
        self._current: Classifier = NoClassifier()

    @property
    def name(self) -> str:
        return self._current.name

    @property
    def remote(self) -> bool:
        return self._current.remote

    def ready(self, classifier: Classifier) -> None:
        self._current = classifier

    def score(self, forms: list[str], pieces: list[str] | None = None) -> float:
        return self._current.score(forms, pieces)
