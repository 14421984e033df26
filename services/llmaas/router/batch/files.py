"""Files' bytes on disk, encrypted (llmaas.router.batch.crypto), one blob per file under the files directory.

A blob is written to a temporary name, synced and renamed, then its record is committed: a record always has its
bytes. Deleting overwrites the blob with zeros (synced) before unlinking it, then drops the record; a blob left
without a record (a crash between the two steps) is removed by the retention sweep.
"""

from __future__ import annotations

import os
import secrets
import time
from pathlib import Path

from llmaas.router.batch.crypto import KeyRing
from llmaas.router.batch.store import Store

# The reference's retention: 7 days (batch.md, "Results file retention").
DEFAULT_RETENTION_SECONDS = 7 * 24 * 3600
# Grace before an orphaned blob (no record) is removed: longer than a write takes.
ORPHAN_GRACE_SECONDS = 3600


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


class FileVault:
    def __init__(self, directory: Path, keys: KeyRing, store: Store, retention_seconds: int) -> None:
        self.directory = directory
        self.keys = keys
        self.store = store
        self.retention_seconds = retention_seconds
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)

    def path(self, file_id: str) -> Path:
        return self.directory / f"{file_id}.bin"

    def write_blob(self, tenant_id: str, file_id: str, data: bytes) -> None:
        blob = self.keys.encrypt(tenant_id, file_id, data)
        temporary = self.directory / f".{file_id}.{os.getpid()}.tmp"
        fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, self.path(file_id))

    def file_row(self, tenant_id: str, file_id: str, purpose: str, filename: str, size: int, requests: int = 0,
                 now: int | None = None, expires_after: int | None = None) -> dict:
        """The file's record; it expires after the retention period, or sooner (`expires_after` seconds)."""
        now = int(time.time()) if now is None else now
        lifetime = self.retention_seconds if expires_after is None else min(expires_after, self.retention_seconds)
        return {"id": file_id, "tenant_id": tenant_id, "purpose": purpose, "filename": filename[:256],
                "bytes": size, "created_at": now, "expires_at": now + lifetime, "requests": requests}

    def create(self, tenant_id: str, purpose: str, filename: str, data: bytes, requests: int = 0,
               expires_after: int | None = None) -> dict:
        file_id = new_file_id()
        self.write_blob(tenant_id, file_id, data)
        row = self.file_row(tenant_id, file_id, purpose, filename, len(data), requests, expires_after=expires_after)
        try:
            self.store.add_file(row)
        except BaseException:
            self.erase_blob(file_id)
            raise
        return row

    def read(self, tenant_id: str, file_id: str) -> bytes:
        return self.keys.decrypt(tenant_id, file_id, self.path(file_id).read_bytes())

    def erase_blob(self, file_id: str) -> None:
        """Overwrites the blob, then unlinks it: its bytes are gone, not only its name."""
        path = self.path(file_id)
        try:
            fd = os.open(path, os.O_WRONLY)
        except FileNotFoundError:
            return
        try:
            size = os.fstat(fd).st_size
            zeros = bytes(min(size, 1 << 20))
            written = 0
            while written < size:
                written += os.write(fd, zeros[:size - written])
            os.fsync(fd)
        finally:
            os.close(fd)
        path.unlink(missing_ok=True)

    def delete(self, tenant_id: str, file_id: str) -> bool:
        if self.store.get_file(tenant_id, file_id) is None:
            return False
        self.erase_blob(file_id)
        return self.store.delete_file(tenant_id, file_id)

    def sweep(self, now: int | None = None) -> int:
        """Deletes the files past their retention, and blobs without a record; the number deleted."""
        now = int(time.time()) if now is None else now
        deleted = 0
        while expired := self.store.expired_files(now):
            for row in expired:
                self.erase_blob(row["id"])
                self.store.delete_file(row["tenant_id"], row["id"])
                deleted += 1
        for path in self.directory.glob("file-*.bin"):
            file_id = path.name.removesuffix(".bin")
            try:
                old = path.stat().st_mtime < now - ORPHAN_GRACE_SECONDS
            except FileNotFoundError:
                continue
            if old and not self.store.file_exists(file_id):
                self.erase_blob(file_id)
                deleted += 1
        return deleted
