"""Sealing the secrets an automatic rotation keeps until the tenant's admin retrieves them.

AES-256-GCM with a key derived from the stack's internal secret, the key id as associated data (a sealed secret
copied onto another key's row does not open). Stored as base64(nonce || ciphertext).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os

from cryptography.hazmat.primitives.ciphers.aead import AESGCM


class Sealer:
    def __init__(self, internal_secret: str) -> None:
        key = hmac.new(internal_secret.encode(), b"llmaas/auth/rotated-secrets/v1", hashlib.sha256).digest()
        self._aead = AESGCM(key)

    def seal(self, plaintext: str, key_id: str) -> str:
        nonce = os.urandom(12)
        return base64.b64encode(nonce + self._aead.encrypt(nonce, plaintext.encode(), key_id.encode())).decode()

    def open(self, sealed: str, key_id: str) -> str:
        raw = base64.b64decode(sealed)
        return self._aead.decrypt(raw[:12], raw[12:], key_id.encode()).decode()
