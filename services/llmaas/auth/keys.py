"""API key format: `sk-llmaas-<key id>-<secret>`.

The key id is public (it names the key in logs, audit and usage); the secret is 256 random bits, shown once and
stored only as its SHA-256 (a slow hash adds nothing for secrets this long). Verification looks the key up by id and
compares digests in constant time, so timing reveals nothing about the secret. A rotation keeps the key id and
changes the secret.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

PREFIX = "sk-llmaas-"
_KEY_ID_CHARS = 16  # hex


def new_secret() -> str:
    return secrets.token_urlsafe(32)


def format_key(key_id: str, secret: str) -> str:
    return f"{PREFIX}{key_id}-{secret}"


def new_key() -> tuple[str, str, str]:
    """Returns (key_id, api_key, secret_sha256)."""
    key_id = secrets.token_hex(_KEY_ID_CHARS // 2)
    secret = new_secret()
    return key_id, format_key(key_id, secret), digest(secret)


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(api_key: str) -> tuple[str, str] | None:
    """(key_id, secret) of a well-formed key, else None."""
    if not api_key.startswith(PREFIX):
        return None
    rest = api_key[len(PREFIX):]
    key_id, sep, secret = rest[:_KEY_ID_CHARS], rest[_KEY_ID_CHARS:_KEY_ID_CHARS + 1], rest[_KEY_ID_CHARS + 1:]
    if sep != "-" or not secret or len(key_id) != _KEY_ID_CHARS:
        return None
    return key_id, secret


def matches(secret: str, stored_sha256: str) -> bool:
    return hmac.compare_digest(digest(secret), stored_sha256)
