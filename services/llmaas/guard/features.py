"""Text features of the learned layer, shared by training and serving: hashed word 1-2-grams and character 2-5-grams
of the comparison form, TF-IDF weighted (sublinear tf, the idf learnt at training), L2-normalised. Hashing keeps the
model a plain array (no vocabulary to pickle) and makes scoring cost independent of the training set's size.

Character n-grams are hashed by numpy over the text's code points, every n-gram of every length in a few array
operations: a 4 KB prompt has 16,000 of them, which a Python loop per n-gram (scikit-learn's char analyzer) took
about 4 ms to hash, ten times the rest of the guard."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.preprocessing import normalize

BUCKETS = 2**18
_WORDS = HashingVectorizer(analyzer="word", ngram_range=(1, 2), n_features=BUCKETS, alternate_sign=False, norm=None,
                           lowercase=False, token_pattern=r"(?u)\b\w+\b")
CHAR_NGRAMS = range(2, 6)
DIMENSIONS = 2 * BUCKETS
# A polynomial rolling hash over code points (FNV's 64-bit prime), then splitmix64's finaliser so that every bit of
# the hash reaches the bucket; uint64 arithmetic wraps, as the hash wants.
_PRIME = np.uint64(0x100000001B3)
_SEED = np.uint64(0x9E3779B97F4A7C15)  # n-grams of different lengths start from different values
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SPACE = np.uint64(32)  # a comparison form's only whitespace


def _mixed(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(30)
    h *= _MIX[0]
    h ^= h >> np.uint64(27)
    h *= _MIX[1]
    h ^= h >> np.uint64(31)
    return h


def char_ngram_occurrences(form: str) -> np.ndarray:
    """The bucket of every occurrence of a character 2-5-gram of the words of form, each word padded with a space on
    both sides (so its start and end are n-grams of their own; n-grams never span two words)."""
    points = np.frombuffer(f" {form} ".encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)
    # spaces[k]: the spaces among points[:k]; an n-gram from i keeps its word when points[i+1 : i+n-1] has none.
    spaces = np.concatenate(([0], np.cumsum(points == _SPACE)))
    rolling, hashes = points + _SEED, []
    for length in range(2, CHAR_NGRAMS.stop):
        if len(rolling) < 2:
            break
        rolling = rolling[:-1] * _PRIME + points[length - 1:]  # rolling[i]: the hash of points[i : i + length]
        if length in CHAR_NGRAMS:
            starts = np.arange(len(rolling))
            hashes.append(rolling[spaces[starts + length - 1] == spaces[starts + 1]])
    return (_mixed(np.concatenate(hashes)) % np.uint64(BUCKETS)).astype(np.int64)


def char_ngram_buckets(form: str) -> tuple[np.ndarray, np.ndarray]:
    """The distinct buckets of char_ngram_occurrences(form), and how often each occurs."""
    return np.unique(char_ngram_occurrences(form), return_counts=True)


def ngram_counts(form: str) -> tuple[np.ndarray, np.ndarray]:
    """One form's n-grams: their columns (word n-grams in the first BUCKETS, character n-grams after) and counts."""
    words = _WORDS.transform([form])
    buckets, occurrences = char_ngram_buckets(form)
    return np.concatenate((words.indices, buckets + BUCKETS)), np.concatenate((words.data, occurrences))


def counts(forms: list[str]) -> sp.csr_matrix:
    """One row per form, for training: ngram_counts as a sparse matrix."""
    rows = [ngram_counts(form) for form in forms]
    indptr = np.cumsum([0] + [len(columns) for columns, _ in rows])
    return sp.csr_matrix((np.concatenate([c for _, c in rows]).astype(np.float64),
                          np.concatenate([columns for columns, _ in rows]), indptr), shape=(len(forms), DIMENSIONS))


def weights(occurrences: np.ndarray, idf: np.ndarray) -> np.ndarray:
    """TF-IDF with sublinear tf (1 + log count), before normalisation; idf: the idf of each occurrence's column."""
    return (np.log(occurrences.astype(np.float32)) + 1.0) * idf


def tfidf(x: sp.csr_matrix, idf: np.ndarray) -> sp.csr_matrix:
    x = x.astype(np.float32, copy=True)
    x.data = weights(x.data, idf[x.indices])
    return normalize(x)


def score(form: str, idf: np.ndarray, coef: np.ndarray) -> float:
    """The linear score coef . tfidf(form), L2-normalised as tfidf() does, without building a sparse matrix: a
    prompt is one row, and scipy's per-matrix checks cost more than the arithmetic. Character n-grams are not sorted
    into distinct buckets either (np.unique's sort of 16,000 of them was the dearest step): each occurrence carries
    1/count of its bucket's weight, so that sums over occurrences are sums over buckets."""
    words = _WORDS.transform([form])
    w_words = weights(words.data, idf[words.indices])
    chars = char_ngram_occurrences(form)
    occurrences = np.bincount(chars, minlength=BUCKETS)[chars]
    columns = chars + BUCKETS
    w_chars = weights(occurrences, idf[columns])
    share = w_chars / occurrences
    norm = float(np.sqrt(w_words @ w_words + share @ w_chars))
    return float(w_words @ coef[words.indices] + share @ coef[columns]) / norm if norm else 0.0


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
