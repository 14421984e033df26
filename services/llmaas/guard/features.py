"""Text features of the learned layer, shared by training and serving: hashed word 1-2-grams and character 2-5-grams
of the comparison form, TF-IDF weighted (sublinear tf, the idf learnt at training), L2-normalised. Hashing keeps the
model a plain array (no vocabulary to pickle) and makes scoring cost independent of the training set's size.

Every n-gram is hashed by numpy over the text's code points, all of them in a few array operations: a 4 KB prompt
has 16,000 character n-grams, which a Python loop per n-gram (scikit-learn's analyzers) took about 4 ms to hash,
ten times the rest of the guard."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.preprocessing import normalize

BUCKETS = 2**18  # per kind: word n-grams in columns [0, BUCKETS), character n-grams in [BUCKETS, 2 * BUCKETS)
CHAR_NGRAMS = range(2, 6)
DIMENSIONS = 2 * BUCKETS
# A polynomial hash over code points (FNV's 64-bit prime), then splitmix64's finaliser so that every bit of the hash
# reaches the bucket; uint64 arithmetic wraps, as the hash wants.
_PRIME = np.uint64(0x100000001B3)
_PRIME_INVERSE = np.uint64(pow(0x100000001B3, -1, 2**64))
_SEED = np.uint64(0x9E3779B97F4A7C15)  # n-grams of different lengths start from different values
_BIGRAM = np.uint64(0xC2B2AE3D27D4EB4F)  # word bigrams hash apart from words
_MIX = (np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB))
_SPACE = np.uint64(32)  # a comparison form's only whitespace
# A word is a run of \w (letters, digits, underscore in any script), as the patterns' \b sees it; beyond the Basic
# Multilingual Plane (emoji, rare ideographs) nothing is.
_WORD_CHAR = np.array([chr(c).isalnum() or c == 0x5F for c in range(0x10000)] + [False])
_BEYOND_BMP = np.uint64(0x10000)


def _mixed(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(30)
    h *= _MIX[0]
    h ^= h >> np.uint64(27)
    h *= _MIX[1]
    h ^= h >> np.uint64(31)
    return h


def _buckets(hashes: np.ndarray) -> np.ndarray:
    return (_mixed(hashes) % np.uint64(BUCKETS)).astype(np.int64)


def _code_points(form: str) -> np.ndarray:
    """" form " as code points: every word of the form has a non-word character on both sides."""
    return np.frombuffer(f" {form} ".encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)


def _word_ngrams(points: np.ndarray) -> np.ndarray:
    """The bucket of every word and every pair of consecutive words."""
    is_word = _WORD_CHAR[np.minimum(points, _BEYOND_BMP)]
    edges = np.flatnonzero(is_word[1:] != is_word[:-1]) + 1  # first and last character are spaces: pairs
    starts, ends = edges[0::2], edges[1::2]
    if not len(starts):
        return np.zeros(0, np.int64)
    # hash(points[s:e]) = sum of points[k] * PRIME^(k-s), from prefix sums of points[k] * PRIME^k.
    powers = np.cumprod(np.full(len(points), _PRIME))
    inverse_powers = np.cumprod(np.full(len(points), _PRIME_INVERSE))
    prefix = np.concatenate(([np.uint64(0)], np.cumsum(points * powers)))
    words = (prefix[ends] - prefix[starts]) * inverse_powers[starts] + _SEED
    return _buckets(np.concatenate((words, words[:-1] * _PRIME + words[1:] + _BIGRAM)))


def _char_ngrams(points: np.ndarray) -> np.ndarray:
    """The bucket of every character 2-5-gram of every word padded with a space on both sides (its start and end
    are n-grams of their own; no n-gram spans two words)."""
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
    return _buckets(np.concatenate(hashes))


def ngram_occurrences(form: str) -> np.ndarray:
    """The column of every n-gram occurrence of form: word 1-2-grams first, then character 2-5-grams."""
    points = _code_points(form)
    return np.concatenate((_word_ngrams(points), _char_ngrams(points) + BUCKETS))


def ngram_counts(form: str) -> tuple[np.ndarray, np.ndarray]:
    """One form's distinct n-gram columns and how often each occurs."""
    return np.unique(ngram_occurrences(form), return_counts=True)


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


# Beyond this many n-grams, counting them in an array of every column (a 4 MB bincount) is cheaper than sorting them.
_SORT_AT_MOST = 2048


def _occurrences(columns: np.ndarray) -> np.ndarray:
    """How often each element's column occurs among columns."""
    if len(columns) > _SORT_AT_MOST:
        return np.bincount(columns, minlength=DIMENSIONS)[columns]
    _, inverse, counts = np.unique(columns, return_inverse=True, return_counts=True)
    return counts[inverse]


def score(form: str, idf: np.ndarray, coef: np.ndarray) -> float:
    """The linear score coef . tfidf(form), L2-normalised as tfidf() does, without building a sparse matrix: a
    prompt is one row, and scipy's per-matrix checks cost more than the arithmetic. Nor are its n-grams sorted into
    distinct columns (np.unique's sort of 16,000 of them was the dearest step): each occurrence carries 1/count of
    its column's weight, so that sums over occurrences are sums over columns."""
    columns = ngram_occurrences(form)
    occurrences = _occurrences(columns)
    w = weights(occurrences, idf[columns])
    share = w / occurrences
    norm = float(np.sqrt(share @ w))
    return float(share @ coef[columns]) / norm if norm else 0.0


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
