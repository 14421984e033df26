"""The comparison form of a prompt, used for matching only (the prompt itself is never changed), and the few
differences between a prompt and its comparison form that are suspicious on their own.

The comparison form folds what an attacker uses to slip past keyword matching: compatibility forms and full-width
Latin (NFKC), case, invisible and format characters, Unicode tag characters, bidi controls, diacritics stacked on
Latin letters, homoglyphs inside Latin words and leetspeak inside words. Honest text changes under NFKC too (Chinese
full-width punctuation, French non-breaking spaces), so "the text changed" is never a finding by itself: only
Latin words mixed with Cyrillic/Greek look-alikes, invisibles inside words, bidi overrides and tag characters are.
"""

from __future__ import annotations

import re
import unicodedata

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


_LEET_HINT = re.compile(r"[a-z][0-9@$]|[0-9@$][a-z]")
_LEET_CHAR = re.compile(r"[0-9@$]")


def _fold_leet(text: str) -> str:
    """_LEET_WORD folded on a whitespace-normalised text. A leet word holds a digit, @ or $, and never spans a space:
    only the words with one are looked at, so the regular expression never crawls over honest prose."""
    if not _LEET_HINT.search(text):
        return text
    pieces, done, folded = [], 0, {}
    m = _LEET_CHAR.search(text)
    while m:
        start = text.rfind(" ", 0, m.start()) + 1
        end = text.find(" ", m.end())
        end = len(text) if end == -1 else end
        word = text[start:end]
        if word not in folded:
            folded[word] = _LEET_WORD.sub(lambda w: w.group().translate(_LEET), word)
        pieces += (text[done:start], folded[word])
        done = end
        m = _LEET_CHAR.search(text, end)
    return "".join(pieces) + text[done:] if pieces else text


_DROPPED = re.compile("[" + INVISIBLE + BIDI_CONTROLS + "\U000e0000-\U000e007f\ufe00-\ufe0f]")


def has_droppable(text: str) -> bool:
    """Any invisible, bidi, tag character or variation selector: one scan, after which an honest text (none of
    them) skips every other check for hidden characters."""
    return not text.isascii() and _DROPPED.search(text) is not None


# Typographic punctuation NFKC keeps: folded so that "n’es" matches "n'es" (and French text becomes ASCII).
_TYPOGRAPHY = (("\u2019", "'"), ("\u2018", "'"), ("\u201c", '"'), ("\u201d", '"'), ("\u00ab", '"'), ("\u00bb", '"'),
               ("\u2013", "-"), ("\u2014", "-"), ("\u2026", "..."))
# What makes honest text fail NFKC's quick check (Chinese and Japanese full-width punctuation, French non-breaking
# spaces): replaced by their NFKC form first, a plain substring replacement (none of them composes with a
# neighbour), so that NFKC itself usually finds the text already normalised and returns at once.
_COMMON_COMPAT = tuple((c, unicodedata.normalize("NFKC", c))
                       for c in "\uff0c\uff1f\uff1a\uff01\uff1b\uff08\uff09\uff5e\u3000\u00a0\u202f\u2009\u2026")
# After accents are taken apart, a text whose only non-ASCII characters are the combining marks loses them by an
# ASCII encoding; anything else (Cyrillic, kana voicing marks, CJK, emoji) takes the precise path.
_NOT_ASCII_OR_DIACRITIC = re.compile("[^\x00-\x7f\u0300-\u036f\u1ab0-\u1aff\u1dc0-\u1dff\u20d0-\u20ff\ufe20-\ufe2f]")


def _nfkc(text: str) -> str:
    for compat, plain in _COMMON_COMPAT:
        if compat in text:
            text = text.replace(compat, plain)
    return unicodedata.normalize("NFKC", text)


def _strip_diacritics(text: str) -> str:
    decomposed = unicodedata.normalize("NFD", text)
    if not _NOT_ASCII_OR_DIACRITIC.search(decomposed):
        return decomposed.encode("ascii", "ignore").decode("ascii")
    return unicodedata.normalize("NFC", _DIACRITICS.sub("", decomposed))


def comparison_form(text: str, *, droppable: bool | None = None) -> str:
    """droppable: has_droppable(text), when the caller already knows it."""
    if text.isascii():
        text = text.lower()  # NFKC keeps ASCII as it is, and casefold() is lower() there
    else:
        if droppable if droppable is not None else _DROPPED.search(text):
            text = text.translate(_DROP)
        text = _nfkc(text).casefold()
        if not text.isascii():
            for typographic, plain in _TYPOGRAPHY:
                if typographic in text:
                    text = text.replace(typographic, plain)
            if _ACCENTED.search(text):
                text = _strip_diacritics(text)
            if not text.isascii():
                text = _fold_homoglyphs(text)
    return _fold_leet(" ".join(text.split()))


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


def has_homoglyph_word(text: str) -> bool:
    """A Latin word with a Cyrillic/Greek look-alike inside ("аdmin"). Real Cyrillic, Greek or Japanese words,
    and formulas like "2πr", are not: only look-alike letters count."""
    if text.isascii() or not _NON_LATIN_LOOKALIKE.search(text):
        return False
    return any(_NON_LATIN_LOOKALIKE.search(w) for w in _MIXED_WORD.findall(unicodedata.normalize("NFKC", text)))
