"""Encoded payloads: base64, hex and rot13 (and text smuggled in Unicode tag characters) are decoded so that the
pattern layer can read what the model would read. Bounded: at most MAX_CANDIDATES blobs of MAX_BLOB_CHARS each,
decoded MAX_DEPTH levels deep, so that a hostile prompt cannot make the guard slow."""

from __future__ import annotations

import base64
import binascii
import codecs
import re
import string
from itertools import repeat

MAX_CANDIDATES = 8
MAX_BLOB_CHARS = 8192
MAX_DEPTH = 2

# Both start with a character class, the look-behind second: the regex engine then skips over every character that
# cannot start a payload (all of a Chinese or Japanese text) instead of trying the look-behind at each position.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-](?<![A-Za-z0-9+/_-].)[A-Za-z0-9+/_-]{15,}={0,2}(?![A-Za-z0-9+/_-])")
_HEX = re.compile(r"[0-9A-Fa-f](?<![0-9A-Fa-f].)[0-9A-Fa-f][\s:]?(?:[0-9A-Fa-f]{2}[\s:]?){11,}(?![0-9A-Fa-f])")
_LETTERS = re.compile(r"[A-Za-z]")
_ASCII_LETTER_BYTES = string.ascii_letters.encode()
_CONTROL_BYTES = bytes(c for c in range(128) if not (chr(c).isprintable() or chr(c).isspace()))
_WIDE = re.compile("[\u2e81-\U0010ffff]")  # CJK and beyond: a character each, as letters are
_DIGIT_OR_UPPER = re.compile("[0-9A-Z]")


def _printable_text(raw: bytes) -> str | None:
    """raw as text, if it reads as text: at least 95% printable or whitespace, at least half letters (or CJK and
    beyond, a character each). On ASCII, both are counted by bytes.translate, a C loop, not per character."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text:
        return None
    if not text.isprintable():
        unprintable = (len(raw) - len(raw.translate(None, _CONTROL_BYTES)) if text.isascii()
                       else sum(not (c.isprintable() or c.isspace()) for c in text))
        if unprintable > 0.05 * len(text):
            return None
    letters = len(raw) - len(raw.translate(None, _ASCII_LETTER_BYTES))  # UTF-8 spells no ASCII byte otherwise
    wide = 0 if text.isascii() else len(_WIDE.findall(text))
    return text if letters + wide >= 0.5 * len(text) else None


def _b64(blob: str) -> str | None:
    if not (_LETTERS.search(blob) and _DIGIT_OR_UPPER.search(blob)):
        return None  # a long plain word is not base64
    padded = blob + "=" * (-len(blob) % 4)
    try:
        raw = base64.b64decode(padded.replace("-", "+").replace("_", "/"), validate=True)
    except (binascii.Error, ValueError):
        return None
    return _printable_text(raw)


def _hex(blob: str) -> str | None:
    try:
        return _printable_text(bytes.fromhex(re.sub(r"[\s:]", "", blob)))
    except ValueError:
        return None


# Two-digit hex tokens ("de", "ad:"), marked "h" in a one-letter-per-token mask where a run of them is a plain
# substring search: C-level passes only, no Python loop over the words of honest prose.
_HEX_TOKEN_MARK = {a + b + c: "h" for a in "0123456789abcdefABCDEF" for b in "0123456789abcdefABCDEF" for c in ("", ":")}
_HEX_TOKEN_RUN = re.compile("h{12,}")
# The words that ask a model to read rot13 ("decipher" contains "cipher"); those with "rot" only looked for when
# "rot" is there.
_ROT13_HINTS = ("caesar", "cesar", "cipher", "chiffr", "decod")
_ROT_HINTS = ("rot13", "rot-13", "rot 13", "rotat")


# The shape of an ASCII text, one character for one (str.translate's fast path): whitespace stays a space, the rest
# is "x"; and the same with hex digits as "h" and colons kept. A long token is then 16 "x" in a row, a hex run a
# regular expression with a literal start, which the regex engine finds as fast as a substring.
_TOKEN_SHAPE = str.maketrans({chr(c): " " if chr(c).isspace() else "x" for c in range(128)})
_LONG = "x" * 16
_HEX_SHAPE = str.maketrans({chr(c): " " if chr(c).isspace() else "h" if chr(c) in "0123456789abcdefABCDEF"
                            else ":" if chr(c) == ":" else "x" for c in range(128)})
_HEX_SHAPE_RUN = re.compile(r"hh(?<![^ ]hh):?(?: +hh:?){11}(?![^ ])")


def _ascii_stand_in(text: str, chars: frozenset[str] | None) -> str | None:
    """text with every non-ASCII character as "?" (one for one; non-ASCII whitespace as a space first): the same
    tokens, lengths, hex digits and ASCII words, for the pre-checks below. chars: its non-ASCII characters (None:
    too many to know, no stand-in)."""
    if text.isascii():
        return text
    if chars is None:
        return None
    for space in (c for c in chars if c.isspace()):
        text = text.replace(space, " ")
    return text.encode("ascii", "replace").decode("ascii")


def _long_tokens(text: str, shape: str) -> list[str]:
    """The tokens of text of 16 characters or more, found on its shape (_TOKEN_SHAPE of its stand-in: the same
    length, a space for each whitespace): a substring search per long token, none per word of honest prose."""
    found, at = [], shape.find(_LONG)
    while at != -1:
        end = shape.find(" ", at)
        end = len(shape) if end == -1 else end
        found.append(text[at:end])
        at = shape.find(_LONG, end)
    return found


def _hex_runs(tokens: list[str]) -> list[str]:
    mask = "".join(map(_HEX_TOKEN_MARK.get, tokens, repeat("-")))
    return [" ".join(tokens[m.start():m.end()]) for m in _HEX_TOKEN_RUN.finditer(mask)]


def _candidates(text: str, stand_in: str | None = None) -> str:
    """The parts of a text that can hold a payload: long tokens, and runs of two-digit hex tokens. Scanning only
    these keeps honest prose cheap. stand_in: _ascii_stand_in(text), if any."""
    stand_in = text if text.isascii() else stand_in
    if stand_in is None:  # many non-ASCII characters (Chinese, Japanese): the tokens themselves, which are few
        tokens = text.split()
        return "\n".join([t for t in tokens if len(t) >= 16] + _hex_runs(tokens))
    keep = _long_tokens(text, stand_in.translate(_TOKEN_SHAPE))
    if _HEX_SHAPE_RUN.search(stand_in.translate(_HEX_SHAPE)):
        keep += _hex_runs(text.split())
    return "\n".join(keep)


def _asks_for_rot13(text: str) -> bool:
    """The prompt asks for rot13 to be read (rot13, Caesar, decode...); text may be the ASCII stand-in (the hints
    are ASCII, and no non-ASCII character lowers into one of their letters but the Kelvin sign's k)."""
    lowered = text[:MAX_BLOB_CHARS].lower()
    return any(hint in lowered for hint in _ROT13_HINTS) or "rot" in lowered and any(h in lowered for h in _ROT_HINTS)


def decoded_payloads(text: str, chars: frozenset[str] | None = None) -> list[tuple[str, str]]:
    """(encoding, decoded text) for every payload found, outermost first. chars: normalize.non_ascii(text), when
    the caller has it (the pre-checks then run on an ASCII stand-in of a mostly-ASCII text)."""
    found: list[tuple[str, str]] = []
    stand_in = _ascii_stand_in(text, chars)
    frontier = [_candidates(text, stand_in)]
    for _ in range(MAX_DEPTH):
        next_frontier = []
        for current in frontier:
            for encoding, pattern, decode in (("base64", _BASE64, _b64), ("hex", _HEX, _hex)):
                for blob in list(dict.fromkeys(pattern.findall(current)))[:MAX_CANDIDATES]:
                    decoded = decode(blob[:MAX_BLOB_CHARS])
                    if decoded:
                        found.append((encoding, decoded))
                        next_frontier.append(_candidates(decoded))
        frontier = next_frontier
        if not frontier:
            break
    # A model reads rot13 only when asked to: the prompt says so (rot13, Caesar, decode...).
    if _asks_for_rot13(text if stand_in is None else stand_in):
        found.append(("rot13", codecs.decode(text[:MAX_BLOB_CHARS], "rot13")))
    return found
