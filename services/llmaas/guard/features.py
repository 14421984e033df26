"""Text features of the learned layer, shared by training and serving: hashed word 1-2-grams and character 2-5-grams
of the comparison form, TF-IDF weighted (sublinear tf, the idf learnt at training), L2-normalised. Hashing keeps the
model a plain array (no vocabulary to pickle) and makes scoring cost independent of the training set's size.

Every n-gram is hashed by numpy over the text's code points, all of them in a few array operations: a 4 KB prompt
has 16,000 character n-grams, which a Python loop per n-gram (scikit-learn's analyzers) took about 4 ms to hash,
ten times the rest of the guard."""

from __future__ import annotations

import threading

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
# Multilingual Plane (emoji, rare ideographs) nothing is. One entry per code point (1.1 MB, of which a prompt reads a
# few cache lines), indexed by the code points themselves.
_IS_WORD_CHAR = np.zeros(0x110000, bool)
_IS_WORD_CHAR[:0x10000] = [chr(c).isalnum() or c == 0x5F for c in range(0x10000)]


def _mixed(h: np.ndarray) -> np.ndarray:
    h ^= h >> np.uint64(30)
    h *= _MIX[0]
    h ^= h >> np.uint64(27)
    h *= _MIX[1]
    h ^= h >> np.uint64(31)
    return h


def _buckets(hashes: np.ndarray) -> np.ndarray:
    """hashes (mixed in place) as buckets in [0, BUCKETS), int64. BUCKETS is a power of two: the modulo is a mask, and
    a value under 2**63 reads the same as int64 (a view, no copy)."""
    return (_mixed(hashes) & np.uint64(BUCKETS - 1)).view(np.int64)


def _code_points(form: str) -> np.ndarray:
    """" form " as code points: every word of the form has a non-word character on both sides."""
    return np.frombuffer(f" {form} ".encode("utf-32-le", "surrogatepass"), dtype=np.uint32).astype(np.uint64)


# PRIME^(k+1) and PRIME^-(k+1) for k < n, kept for texts up to _POWERS_KEPT characters: a chat prompt's hashing is a
# few dozen numpy calls on a few hundred elements each, where computing these tables again was two of the dearest.
_POWERS_KEPT = 1 << 16
_powers = (np.zeros(0, np.uint64), np.zeros(0, np.uint64))


def _power_tables(n: int) -> tuple[np.ndarray, np.ndarray]:
    global _powers
    kept = _powers  # one read: another thread may replace the pair (never change it)
    if len(kept[0]) >= n:
        return kept[0][:n], kept[1][:n]
    size = min(max(n, 2 * len(kept[0]), 1024), _POWERS_KEPT) if n <= _POWERS_KEPT else n
    tables = (np.cumprod(np.full(size, _PRIME)), np.cumprod(np.full(size, _PRIME_INVERSE)))
    if size <= _POWERS_KEPT:
        _powers = tables
    return tables[0][:n], tables[1][:n]


def _word_hashes(points: np.ndarray) -> np.ndarray:
    """The hash (not yet mixed) of every word and every pair of consecutive words."""
    is_word = _IS_WORD_CHAR[points]
    # Each word's first character and last one: points[0] and points[-1] are spaces, so they come in pairs, and a
    # word's first character has one before it.
    edges = np.flatnonzero(is_word[1:] != is_word[:-1])
    before, last = edges[0::2], edges[1::2]
    if not len(before):
        return np.zeros(0, np.uint64)
    # hash(points[s:e]) = sum of points[k] * PRIME^(k-s), from prefix sums of points[k] * PRIME^(k+1) (the tables
    # start at PRIME^1): sums[k] is the prefix through k, so a word is sums[e-1] - sums[s-1], divided by PRIME^(s+1).
    powers, inverse_powers = _power_tables(len(points) + 1)
    sums = np.cumsum(points * powers[:-1])
    words = (sums[last] - sums[before]) * inverse_powers[1:][before] + _SEED
    bigrams = words[:-1] * _PRIME
    bigrams += words[1:]
    bigrams += _BIGRAM
    return np.concatenate((words, bigrams))


def _char_hashes(points: np.ndarray) -> list[np.ndarray]:
    """The hash (not yet mixed) of every character 2-5-gram of every word padded with a space on both sides (its
    start and end are n-grams of their own; no n-gram spans two words), by length then position."""
    # An n-gram from i keeps its word when none of points[i+1 : i+n-1] is a space: a 2-gram always, a longer one
    # when the one a character shorter did and its new inner character is no space (masks of slices, no indexing).
    inner = points != _SPACE
    rolling, hashes, keep = points + _SEED, [], None
    for length in range(2, CHAR_NGRAMS.stop):
        if len(rolling) < 2:
            break
        rolling = rolling[:-1] * _PRIME
        rolling += points[length - 1:]  # rolling[i]: the hash of points[i : i + length]
        n = len(rolling)
        if length > 2:
            keep = inner[1:1 + n] if keep is None else keep[:n] & inner[length - 2:length - 2 + n]
        if length in CHAR_NGRAMS:
            hashes.append(rolling if keep is None else rolling[keep])
    return hashes


def ngram_occurrences(form: str) -> np.ndarray:
    """The column of every n-gram occurrence of form: word 1-2-grams first, then character 2-5-grams. Every hash is
    mixed in one pass over one array (each numpy call costs about a microsecond whatever its size, and a chat
    prompt has a few hundred n-grams)."""
    points = _code_points(form)
    words = _word_hashes(points)
    columns = _buckets(np.concatenate((words, *_char_hashes(points))))
    columns[len(words):] += BUCKETS
    return columns


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


# Per thread, a count for every column (4 MB of address space, of which the pages prompts' n-grams fall in are
# touched), all zero between two calls: counting a prompt's n-grams is then one unbuffered add and two indexings
# (np.unique's sort, or a fresh 4 MB bincount, cost ten to twenty times more). int64, as the columns and the added
# 1 are: np.add.at takes its fast path only without a cast (ten times slower with int32 counts).
_scratch = threading.local()


def _occurrences(columns: np.ndarray) -> np.ndarray:
    """How often each element's column occurs among columns."""
    counts = getattr(_scratch, "counts", None)
    if counts is None:
        counts = _scratch.counts = np.zeros(DIMENSIONS, np.int64)
    try:
        np.add.at(counts, columns, 1)
        return counts[columns]
    finally:
        counts[columns] = 0


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
