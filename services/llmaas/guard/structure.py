"""Structural layer: characters that hide or reorder text, and JSON that tries to speak with a system's voice."""

from __future__ import annotations

import json
import re

from llmaas.guard import normalize

# A message object claiming a privileged role: {"role": "system", "content": ...}. A "system" key on its own
# ({"system": "linux"}) is ordinary data and is not flagged.
_PRIVILEGED_ROLE = re.compile(r"[\"']role[\"']\s*:\s*[\"'](?:system|developer|assistant|tool)[\"']", re.I)
_MAX_JSON_CHARS = 64 * 1024


def _message_objects(value, depth: int = 0):
    if depth > 8:
        return
    if isinstance(value, dict):
        yield value
        for v in value.values():
            yield from _message_objects(v, depth + 1)
    elif isinstance(value, list):
        for v in value:
            yield from _message_objects(v, depth + 1)


def has_role_injection(text: str) -> bool:
    """A prompt carrying a conversation of its own in which a message claims the system/developer role."""
    if not _PRIVILEGED_ROLE.search(text):
        return False
    stripped = text.strip()
    if stripped[:1] in "{[" and len(stripped) <= _MAX_JSON_CHARS:
        try:
            parsed = json.loads(stripped)
        except ValueError:
            return True  # a role claim in JSON-looking text that does not parse: embedded, still a claim
        return any(str(m.get("role", "")).lower() in ("system", "developer") and "content" in m
                   for m in _message_objects(parsed))
    return True


def _role_claim_possible(text: str) -> bool:
    """A quoted "role" (any case): two substring searches before the regular expression scans the whole text."""
    lowered = text.lower()
    return 'role"' in lowered or "role'" in lowered


_HIDDEN = (
    ("bidi_override", 0.6, normalize.has_bidi_override),
    ("tag_characters", 0.8, normalize.has_tag_characters),
    ("invisible_in_word", 0.45, normalize.has_invisible_inside_word),
)
_HOMOGLYPH = ("homoglyph_mixed_script", 0.45)
_ROLE_INJECTION = ("role_injection_json", 0.85)


def findings(text: str, *, chars: frozenset[str] | None = None) -> list[tuple[str, float]]:
    """(reason, score) of the structural findings. Hidden characters and look-alikes are all outside ASCII, and a
    role claim needs the word "role": the cheap tests come first. chars: normalize.non_ascii(text), when known."""
    found = []
    if not text.isascii():
        if normalize.has_droppable(text, chars) and normalize.has_hidden_characters(text):
            found += [(reason, score) for reason, score, check in _HIDDEN if check(text)]
        if normalize.has_homoglyph_word(text, chars):
            found.append(_HOMOGLYPH)
    if ("ole" in text or "OLE" in text) and _role_claim_possible(text) and has_role_injection(text):
        found.append(_ROLE_INJECTION)
    return found
