"""Encoded payloads: base64, hex and rot13 (and text smuggled in Unicode tag characters) are decoded so that the
pattern layer can read what the model would read. Bounded: at most MAX_CANDIDATES blobs of MAX_BLOB_CHARS each,
decoded MAX_DEPTH levels deep, so that a hostile prompt cannot make the guard slow."""

from __future__ import annotations

import base64
import binascii
import codecs
import re

MAX_CANDIDATES = 8
MAX_BLOB_CHARS = 8192
MAX_DEPTH = 2

# Both start with a character class, the look-behind second: the regex engine then skips over every character that
# cannot start a payload (all of a Chinese or Japanese text) instead of trying the look-behind at each position.
_BASE64 = re.compile(r"[A-Za-z0-9+/_-](?<![A-Za-z0-9+/_-].)[A-Za-z0-9+/_-]{15,}={0,2}(?![A-Za-z0-9+/_-])")
_HEX = re.compile(r"[0-9A-Fa-f](?<![0-9A-Fa-f].)[0-9A-Fa-f][\s:]?(?:[0-9A-Fa-f]{2}[\s:]?){11,}(?![0-9A-Fa-f])")
_LETTERS = re.compile(r"[A-Za-z]")
_HEX_PAIRS = frozenset(a + b for a in "0123456789abcdefABCDEF" for b in "0123456789abcdefABCDEF")


def _printable_text(raw: bytes) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if not text or sum(c.isprintable() or c.isspace() for c in text) < 0.95 * len(text):
        return None
    return text if len(_LETTERS.findall(text)) + sum(ord(c) > 0x2e80 for c in text) >= 0.5 * len(text) else None


def _b64(blob: str) -> str | None:
    if not (_LETTERS.search(blob) and any(c.isdigit() or c.isupper() for c in blob)):
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


_ROT13_HINT = ("rot13", "rot-13", "rot 13", "caesar", "cesar", "cipher", "chiffr", "decod", "decipher", "rotat")


# A run of at least 12 two-digit hex tokens ("de ad be ef ...", "de:ad:..." split by spaces), each token alone.
_HEX_RUN = re.compile(r"\s(?:[0-9A-Fa-f]{2}:?(?:\s+|$)){12,}")


def _candidates(text: str) -> str:
    """The parts of a text that can hold a payload: long tokens, and runs of two-digit hex tokens. Scanning only
    these keeps honest prose cheap (C-level passes only: no Python loop over its words)."""
    tokens = text.split()
    keep = [t for t in tokens if len(t) >= 16] if max(map(len, tokens), default=0) >= 16 else []
    keep += [" ".join(run.split()) for run in _HEX_RUN.findall(" " + text)]
    return "\n".join(keep)


def decoded_payloads(text: str) -> list[tuple[str, str]]:
    """(encoding, decoded text) for every payload found, outermost first."""
    found: list[tuple[str, str]] = []
    frontier = [_candidates(text)]
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
    lowered = text[:MAX_BLOB_CHARS].lower()
    if any(hint in lowered for hint in _ROT13_HINT):
        found.append(("rot13", codecs.decode(text[:MAX_BLOB_CHARS], "rot13")))
    return found
