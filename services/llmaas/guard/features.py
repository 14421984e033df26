"""Text features of the learned layer, shared by training and serving: hashed word 1-2-grams and character 2-5-grams
of the comparison form, TF-IDF weighted (sublinear tf, the idf learnt at training), L2-normalised. Hashing keeps the
model a plain array (no vocabulary to pickle) and makes scoring cost independent of the training set's size."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

BUCKETS = 2**18
_WORDS = HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=BUCKETS, alternate_sign=False, norm=None,
                           lowercase=False, token_pattern=r"(?u)\b\w+\b")
_CHARS = HashingVectorizer(analyzer="char_wb", ngram_range=(2, 5), n_features=BUCKETS, alternate_sign=False, norm=None,
                           lowercase=False)
DIMENSIONS = 2 * BUCKETS


def counts(forms: list[str]) -> sp.csr_matrix:
    return sp.hstack([_WORDS.transform(forms), _CHARS.transform(forms)], format="csr")


def tfidf(x: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    x = x.astype(np.float32, copy=True)
    np.log(x.data, out=x.data)
    x.data += 1.0
    return normalize(x.multiply(idf).tocsr())


def fit_idf(x: sp.csr_matrix) -> np.ndarray:
    df = np.bincount(x.indices, minlength=x.shape[1])
    return (np.log((1 + x.shape[0]) / (1 + df)) + 1).astype(np.float32)


def segments(text: str, max_chars: int = 400) -> list[str]:
    """A document cut into paragraphs, long ones into pieces of at most max_chars on sentence ends."""
    pieces = []
    for paragraph in (p.strip() for p in text.replace("\r", "").split("\n\n")):
        while len(paragraph) > max_chars:
            cut = max(paragraph.rfind(sep, 0, max_chars) for sep in (". ", "\n", "。", "? ", "! "))
            cut = cut + 1 if cut > max_chars // 4 else max_chars
            pieces.append(paragraph[:cut].strip())
            paragraph = paragraph[cut:].strip()
        if paragraph:
            pieces.append(paragraph)
    return pieces or [text]
