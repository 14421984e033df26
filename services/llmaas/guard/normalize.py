"""The comparison form of a prompt, used for matching only (the prompt itself is never changed).

NFKC folds full-width Latin and compatibility forms, casefold removes case, and invisible or format characters
(zero-width, soft hyphen, bidi controls, Unicode tag characters) are dropped so that they cannot split a keyword.
"""

from __future__ import annotations

import re
import unicodedata

# Zero-width and joiner characters, soft hyphen, word joiner, BOM.
_INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
_BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f"
_DROP = {ord(c): None for c in _INVISIBLE + _BIDI_CONTROLS}
_TAG_CHARS = re.compile("[\U000e0000-\U000e007f]")
_SPACES = re.compile(r"\s+")


def comparison_form(text: str) -> str:
    text = _TAG_CHARS.sub("", text.translate(_DROP))
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold())


def has_bidi_override(text: str) -> bool:
    return any(c in text for c in "\u202d\u202e\u2066\u2067\u2068")


def has_tag_characters(text: str) -> bool:
    return _TAG_CHARS.search(text) is not None


_WORD_WITH_INVISIBLE = re.compile(r"\w[" + _INVISIBLE + r"]+\w")


def has_invisible_inside_word(text: str) -> bool:
    return _WORD_WITH_INVISIBLE.search(text) is not None
