"""Tenants and API keys in SQL, with a short verification cache (the hot path is one lookup per request)."""

from __future__ import annotations

import secrets
import time
from datetime import UTC, datetime

import sqlalchemy as sa

from llmaas.auth import keys
from llmaas.auth.tables import api_keys, tenants
from llmaas.common.identity import Identity

# How long a verified key may be trusted without asking the database again. Revocation (added with the admin API)
# takes effect within this bound.
VERIFY_CACHE_SECONDS = 2.0


class TenantExists(Exception):
    pass


class KeyStore:
    def __init__(self, engine: sa.Engine) -> None:
        self._engine = engine
        self._cache: dict[str, tuple[float, Identity]] = {}

    def create_tenant(self, name: str) -> str:
        tenant_id = "ten_" + secrets.token_hex(8)
        try:
            with self._engine.begin() as conn:
                conn.execute(tenants.insert().values(id=tenant_id, name=name, created_at=datetime.now(UTC)))
        except sa.exc.IntegrityError:
            raise TenantExists(name) from None
        return tenant_id

    def tenant_exists(self, tenant_id: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is not None

    def create_key(self, tenant_id: str, name: str) -> tuple[str, str]:
        """Returns (key_id, api_key); the api_key is never stored."""
        key_id, api_key, secret_sha256 = keys.new_key()
        with self._engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key_id, tenant_id=tenant_id, name=name, secret_sha256=secret_sha256, created_at=datetime.now(UTC)))
        return key_id, api_key

    def verify(self, api_key: str) -> Identity | None:
        parsed = keys.parse(api_key)
        if parsed is None:
            return None
        key_id, secret = parsed
        # The cache is keyed by the digest so that it never holds a secret in clear.
        cache_key = keys.digest(api_key)
        hit = self._cache.get(cache_key)
        now = time.monotonic()
        if hit and hit[0] > now:
            return hit[1]
        with self._engine.connect() as conn:
            row = conn.execute(
                sa.select(api_keys.c.tenant_id, api_keys.c.secret_sha256, api_keys.c.revoked_at)
                .where(api_keys.c.id == key_id)
            ).first()
        if row is None or row.revoked_at is not None or not keys.matches(secret, row.secret_sha256):
            self._cache.pop(cache_key, None)
            return None
        identity = Identity(tenant_id=row.tenant_id, key_id=key_id)
        if len(self._cache) > 100_000:
            self._cache.clear()
        self._cache[cache_key] = (now + VERIFY_CACHE_SECONDS, identity)
        return identity
