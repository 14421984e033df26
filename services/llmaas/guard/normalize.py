"""The comparison form of a prompt, used for matching only (the prompt itself is never changed), and the few
differences between a prompt and its comparison form that are suspicious on their own.

The comparison form folds what an attacker uses to slip past keyword matching: compatibility forms and full-width
Latin (NFKC), case, invisible and format characters, Unicode tag characters, bidi controls, diacritics stacked on
Latin letters, homoglyphs inside Latin words and leetspeak inside words. Honest text changes under NFKC too (Chinese
full-width punctuation, French non-breaking spaces), so "the text changed" is never a finding by itself: only
Latin words mixed with Cyrillic/Greek look-alikes, invisibles inside words, bidi overrides and tag characters are.
"""

from __future__ import annotations

import functools
import re
import unicodedata
from typing import NamedTuple

from llmaas.guard.confusables import HOMOGLYPHS

# Zero-width and joiner characters, soft hyphen, Mongolian vowel separator, word joiner, invisible operators, BOM.
INVISIBLE = "\u00ad\u180e\u200b\u200c\u200d\u2060\u2061\u2062\u2063\u2064\ufeff"
BIDI_CONTROLS = "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_DROP = {ord(c): None for c in INVISIBLE + BIDI_CONTROLS}
_DROP.update({cp: None for cp in range(0xE0000, 0xE0080)})  # tag characters
_DROP.update({cp: None for cp in range(0xFE00, 0xFE10)})  # variation selectors
# Combining diacritics (accents, "Zalgo" stacks): the blocks used by Latin, Greek and Cyrillic. Kana voicing marks
# and Indic vowel signs live in other blocks and are kept.
_DIACRITICS = re.compile("[\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]+")
# Latin letters with diacritics, precomposed or combining: only then is the decomposition pass worth its cost.
_ACCENTED = re.compile("[\u00c0-\u024f\u1e00-\u1eff\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")
_NON_LATIN_LOOKALIKE = re.compile("[" + "".join(chr(c) for c in HOMOGLYPHS) + "]")
_WORD = re.compile(r"\w+")
_LATIN = re.compile(r"[a-z]")
# A word that mixes letters with digits or symbols used as letters: "1gn0re", "pr0mpt", "$ystem".
_LEET_WORD = re.compile(r"(?=[\w@$!]*[a-z])[\w@$]*[0-9@$][\w@$!]*")
_LEET = str.maketrans("013457@$8", "oieastasb")


def _fold_homoglyphs(text: str) -> str:
    if not _NON_LATIN_LOOKALIKE.search(text):
        return text
    latin = len(_LATIN.findall(text))
    mostly_latin = latin * 2 > sum(c.isalpha() for c in text)

    def fold(m: re.Match[str]) -> str:
        word = m.group()
        return word.translate(HOMOGLYPHS) if mostly_latin or _LATIN.search(word) else word

    return _WORD.sub(fold, text)


# A letter next to a digit, @ or $ ("1gn0re", "pr0mpt", "$ystem"), found from the digit side: prose has few digits,
# and the regex engine skips to them (from the letter side, it stopped at every letter of the text).
_LEET_HINT = re.compile(r"[0-9@$](?:(?<=[a-z].)|(?=[a-z]))")


def _fold_leet(text: str) -> str:
    """_LEET_WORD folded in the words (of a whitespace-normalised text) where a letter touches a digit, @ or $: the
    regular expression runs on those words only, never over honest prose."""
    m = _LEET_HINT.search(text)
    if not m:
        return text
    pieces, done, folded = [], 0, {}
    while m:
        start = text.rfind(" ", 0, m.start()) + 1
        end = text.find(" ", m.end())
        end = len(text) if end == -1 else end
        word = text[start:end]
        if word not in folded:
            folded[word] = _LEET_WORD.sub(lambda w: w.group().translate(_LEET), word)
        pieces += (text[done:start], folded[word])
        done = end
        m = _LEET_HINT.search(text, end)
    return "".join(pieces) + text[done:]


_DROPPED = re.compile("[" + INVISIBLE + BIDI_CONTROLS + "\U000e0000-\U000e007f\ufe00-\ufe0f]")


_DROPPABLE_CHARS = frozenset(INVISIBLE + BIDI_CONTROLS + "".join(map(chr, [*range(0xE0000, 0xE0080),
                                                                          *range(0xFE00, 0xFE10)])))
_ASCII_BYTES = bytes(range(128))


def _non_ascii_chars(text: str) -> set[str]:
    """The distinct non-ASCII characters of text: its UTF-8 without the ASCII bytes is still UTF-8 (a multi-byte
    sequence has no ASCII byte), and bytes.translate drops them in one C loop, where a regex visits each character."""
    return set(text.encode("utf-8", "surrogatepass").translate(None, _ASCII_BYTES).decode("utf-8", "surrogatepass"))


# Up to this many non-ASCII characters (a French, German or code prompt, English with an emoji), one scan lists them
# and every later question about them is a set operation; beyond (Chinese, Japanese, Russian), a regex scan per
# question is the cheaper way.
_FEW = 512


def non_ascii(text: str) -> frozenset[str] | None:
    """The distinct non-ASCII characters of text, or None when it has more than a few (see _FEW)."""
    if text.isascii():
        return frozenset()
    if len(text) - len(text.encode("ascii", "ignore")) > _FEW:
        return None
    return frozenset(_non_ascii_chars(text))


def has_droppable(text: str, chars: frozenset[str] | None = None) -> bool:
    """Any invisible, bidi, tag character or variation selector, after which an honest text (none of them) skips
    every other check for hidden characters. chars: non_ascii(text), when known."""
    if chars is not None:
        return not chars.isdisjoint(_DROPPABLE_CHARS)
    return not text.isascii() and _DROPPED.search(text) is not None


# Typographic punctuation NFKC keeps: folded so that "n’es" matches "n'es" (and French text becomes ASCII).
_TYPOGRAPHY = {"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u00ab": '"', "\u00bb": '"', "\u2013": "-",
               "\u2014": "-", "\u2026": "..."}
# What makes honest text fail NFKC's quick check (Chinese and Japanese full-width punctuation, French non-breaking
# spaces): replaced by their NFKC form first, a plain substring replacement (none of them composes with a
# neighbour), so that NFKC itself usually finds the text already normalised and returns at once.
_COMMON_COMPAT = {c: unicodedata.normalize("NFKC", c)
                  for c in "\uff0c\uff1f\uff1a\uff01\uff1b\uff08\uff09\uff5e\u3000\u00a0\u202f\u2009\u2026"}
_COMMON_COMPAT_CHAR = re.compile("[" + "".join(_COMMON_COMPAT) + "]")
_TYPOGRAPHIC_CHAR = re.compile("[" + "".join(_TYPOGRAPHY) + "]")
_HOMOGLYPH_CHARS = frozenset(map(chr, HOMOGLYPHS))
# Beyond this many distinct non-ASCII characters (a Chinese text with an accent in it), one pass over the whole text
# is cheaper than a replacement per character.
_MAX_DISTINCT = 64


def _nfkc(text: str, chars: frozenset[str] | None) -> tuple[str, frozenset[str] | None]:
    """NFKC(text) and its non-ASCII characters (None: unknown); chars: text's (None: unknown)."""
    compat = set(_COMMON_COMPAT_CHAR.findall(text)) if chars is None else chars & _COMMON_COMPAT.keys()
    for char in compat:
        text = text.replace(char, _COMMON_COMPAT[char])
    normalized = unicodedata.normalize("NFKC", text)
    if chars is None or normalized is not text and normalized != text:
        return normalized, None
    return normalized, chars - compat  # their NFKC forms are ASCII


@functools.lru_cache(maxsize=4096)
def _without_diacritics(char: str) -> str:
    return unicodedata.normalize("NFC", _DIACRITICS.sub("", unicodedata.normalize("NFD", char)))


def _strip_diacritics(text: str, chars: set[str]) -> tuple[str, set[str]]:
    """NFC(text without the diacritics of NFD(text)), and its non-ASCII characters; chars: text's. Character by
    character (a French text has a handful) with a substring replacement each, then NFC over the result: the same
    text, each character's piece being canonically equivalent to its part of the whole."""
    if len(chars) > _MAX_DISTINCT:
        text = unicodedata.normalize("NFC", _DIACRITICS.sub("", unicodedata.normalize("NFD", text)))
        return text, _non_ascii_chars(text)
    remaining: set[str] = set()
    for char in chars:
        plain = _without_diacritics(char)
        if plain != char:
            text = text.replace(char, plain)
        remaining.update(plain)
    if text.isascii():
        return text, set()
    composed = unicodedata.normalize("NFC", text)
    return composed, remaining if composed == text else _non_ascii_chars(composed)


def comparison_form(text: str, *, chars: frozenset[str] | None = None) -> str:
    """chars: non_ascii(text), when the caller already has it. With it (a mostly-ASCII text), each step below asks a
    set of a few characters instead of scanning the text again."""
    if text.isascii():
        return _fold_leet(" ".join(text.lower().split()))  # NFKC keeps ASCII as it is, casefold() is lower() there
    if chars is None:
        chars = non_ascii(text)
    if has_droppable(text, chars):
        text = text.translate(_DROP)
        chars = None if chars is None else chars - _DROPPABLE_CHARS
    text, chars = _nfkc(text, chars)
    text = text.casefold()
    if chars is not None:  # casefold() works character by character
        chars = frozenset(c for c in "".join(chars).casefold() if not c.isascii())
    if not text.isascii():
        typographic = set(_TYPOGRAPHIC_CHAR.findall(text)) if chars is None else chars & _TYPOGRAPHY.keys()
        for char in typographic:
            text = text.replace(char, _TYPOGRAPHY[char])
        if chars is not None:
            chars -= typographic
        if _ACCENTED.search(text if chars is None else "".join(chars)):
            # Stripping needs the distinct non-ASCII characters (a handful in a French text).
            text, chars = _strip_diacritics(text, _non_ascii_chars(text) if chars is None else set(chars))
        if chars is None or not chars.isdisjoint(_HOMOGLYPH_CHARS):
            text = _fold_homoglyphs(text)
    return _fold_leet(" ".join(text.split()))


class Prepared(NamedTuple):
    """What every layer asks first of a text: its non-ASCII characters (non_ascii) and its comparison form. The
    service computes them once for a user prompt, which the behavioural window and the rules both read."""

    chars: frozenset[str] | None
    form: str


def prepare(text: str) -> Prepared:
    chars = non_ascii(text)
    return Prepared(chars, comparison_form(text, chars=chars))


# --- suspicious differences --------------------------------------------------------------------------------------

_OVERRIDES = re.compile("[\u202d\u202e]")
_ISOLATES = re.compile("[\u2066\u2067\u2068]")
_RTL_LETTERS = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
_TAG_RUN = re.compile("[\U000e0000-\U000e007f]+")
# England, Scotland and Wales flags are U+1F3F4 followed by tag characters and CANCEL TAG: not a trick.
_SUBDIVISION_FLAG = re.compile("\U0001f3f4[\U000e0061-\U000e007a\U000e0030-\U000e0039]{2,6}\U000e007f")
# An invisible between two letters, except where joiners belong to the script (Arabic, Persian, Indic, ...).
_INVISIBLE_IN_WORD = re.compile(r"(?<=[^\W\u0600-\u0dff])[" + INVISIBLE + r"]+(?=[^\W\u0600-\u0dff])")
_MIXED_WORD = re.compile(r"\w*[a-zA-Z]\w*")


_HIDDEN_ANY = re.compile("[" + INVISIBLE + BIDI_CONTROLS + "\U000e0000-\U000e007f]")


def has_hidden_characters(text: str) -> bool:
    """Any invisible, bidi or tag character at all: one fast scan before the precise checks."""
    return _HIDDEN_ANY.search(text) is not None


def has_bidi_override(text: str) -> bool:
    """Explicit overrides reorder what the reader sees; isolates are suspicious only where no right-to-left text
    needs them."""
    if _OVERRIDES.search(text):
        return True
    return _ISOLATES.search(text) is not None and _RTL_LETTERS.search(text) is None


def hidden_tag_text(text: str) -> str:
    """The ASCII text smuggled in Unicode tag characters (each tag U+E00xx mirrors ASCII xx), flags excepted."""
    if text.isascii() or not _TAG_RUN.search(text):
        return ""
    text = _SUBDIVISION_FLAG.sub("", text)
    return "".join(chr(ord(c) - 0xE0000) for run in _TAG_RUN.findall(text) for c in run if 0xE0020 <= ord(c) < 0xE007F)


def has_tag_characters(text: str) -> bool:
    return _TAG_RUN.search(_SUBDIVISION_FLAG.sub("", text)) is not None if _TAG_RUN.search(text) else False


def has_invisible_inside_word(text: str) -> bool:
    return _INVISIBLE_IN_WORD.search(text) is not None


def has_homoglyph_word(text: str, chars: frozenset[str] | None = None) -> bool:
    """A Latin word with a Cyrillic/Greek look-alike inside ("аdmin"). Real Cyrillic, Greek or Japanese words,
    and formulas like "2πr", are not: only look-alike letters count. chars: non_ascii(text), when known."""
    if text.isascii() or (chars.isdisjoint(_HOMOGLYPH_CHARS) if chars is not None
                          else not _NON_LATIN_LOOKALIKE.search(text)):
        return False
    return any(_NON_LATIN_LOOKALIKE.search(w) for w in _MIXED_WORD.findall(unicodedata.normalize("NFKC", text)))
