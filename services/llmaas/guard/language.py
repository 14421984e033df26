"""A rough language guess for reporting (per-language tables of the evaluation), from scripts and stop words."""

from __future__ import annotations

import re

_KANA = re.compile("[\u3040-\u30ff]")
_HAN = re.compile("[\u4e00-\u9fff]")
_HANGUL = re.compile("[\uac00-\ud7af]")
_CYRILLIC = re.compile("[\u0400-\u04ff]")
_WORDS = re.compile(r"[a-zà-ÿ']+")
_STOP = {
    "en": {"the", "and", "is", "are", "you", "what", "how", "to", "of", "in", "a", "i", "my", "for", "can", "your"},
    "de": {"der", "die", "das", "und", "ist", "ich", "du", "nicht", "wie", "was", "ein", "eine", "mit", "für", "zu"},
    "fr": {"le", "la", "les", "et", "est", "je", "tu", "vous", "une", "des", "que", "pour", "dans", "pas", "quel"},
    "es": {"el", "los", "las", "y", "es", "que", "una", "por", "para", "cómo", "qué", "con", "del", "mi", "tu"},
}


def guess(text: str) -> str:
    if _KANA.search(text):
        return "ja"
    if _HAN.search(text):
        return "zh"
    if _HANGUL.search(text):
        return "ko"
    if _CYRILLIC.search(text):
        return "ru"
    words = _WORDS.findall(text.lower())
    scores = {lang: sum(w in stop for w in words) for lang, stop in _STOP.items()}
    best = max(scores, key=scores.get)
    return best if scores[best] else "other"
