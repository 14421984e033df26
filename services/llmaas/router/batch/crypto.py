"""Files at rest: AES-256-GCM, one key per tenant, derived from key material kept outside the database.

The master key is 32 random bytes in a file of its own (0600, made on first use, e.g. <data dir>/files.key): a copy of
the database (or its backups) alone decrypts nothing. A tenant's key is HKDF-SHA256(master, info=tenant id), so no
per-tenant key is stored anywhere. Each blob has a fresh 96-bit nonce and is bound to its tenant and object id by the
associated data: a blob moved under another id or tenant does not decrypt.
"""

from __future__ import annotations

import functools
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MASTER_KEY_BYTES = 32
NONCE_BYTES = 12
# Blob layout: version byte, nonce, ciphertext+tag.
_VERSION = b"\x01"


class DecryptionError(Exception):
    """A blob that does not decrypt under this key and id (another key file, or tampered bytes)."""


def load_master_key(path: Path) -> bytes:
    """The master key in `path`, created (0600, atomically) when the file does not exist yet."""
    try:
        key = path.read_bytes()
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(MASTER_KEY_BYTES))
            f.flush()
            os.fsync(f.fileno())
        try:
            os.link(temporary, path)  # never replaces a key another process made meanwhile
        except FileExistsError:
            pass
        finally:
            temporary.unlink(missing_ok=True)
        key = path.read_bytes()
    if len(key) != MASTER_KEY_BYTES:
        raise ValueError(f"{path}: the files' master key must be {MASTER_KEY_BYTES} bytes, found {len(key)}")
    return key


class KeyRing:
    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != MASTER_KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._master = master_key

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one KeyRing per process
    def _aead(self, tenant_id: str) -> AESGCM:
        key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"llmaas-files-v1",
                   info=tenant_id.encode()).derive(self._master)
        return AESGCM(key)

    def encrypt(self, tenant_id: str, object_id: str, plaintext: bytes) -> bytes:
        nonce = secrets.token_bytes(NONCE_BYTES)
        return _VERSION + nonce + self._aead(tenant_id).encrypt(nonce, plaintext, _aad(tenant_id, object_id))

    def decrypt(self, tenant_id: str, object_id: str, blob: bytes) -> bytes:
        if len(blob) < 1 + NONCE_BYTES + 16 or blob[:1] != _VERSION:
            raise DecryptionError(object_id)
        nonce = blob[1:1 + NONCE_BYTES]
        try:
            return self._aead(tenant_id).decrypt(nonce, blob[1 + NONCE_BYTES:], _aad(tenant_id, object_id))
        except InvalidTag:
            raise DecryptionError(object_id) from None


def _aad(tenant_id: str, object_id: str) -> bytes:
    return f"{tenant_id}\0{object_id}".encode()
