"""Tenants and API keys in SQL: creation, verification (with a short cache), rotation, revocation.

Verification is the hot path (one per request). A key's row is cached by key id for VERIFY_CACHE_SECONDS; the
secret itself is compared against the cached digests every time, in constant time, and expiry and the rotation
grace window are evaluated against the clock at each check. Every replica reads the same database, so a revocation
or rotation takes effect everywhere within VERIFY_CACHE_SECONDS: the documented bound.

A key's row is read joined with its tenant's settings (today: the opt-in to being served by a retired model's
successor), which then travel in the key's signed identity. They are cached with the key, so a tenant update reaches
requests within the same bound (at once on the replica that made it, which drops that tenant's cached keys).
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import Enum

import sqlalchemy as sa

from llmaas.auth import keys
from llmaas.auth.sealed import Sealer
from llmaas.auth.tables import api_keys, tenants
from llmaas.common.db import as_utc
from llmaas.common.identity import ROLE_KEY, ROLE_TENANT_ADMIN, Identity, Quota

VERIFY_CACHE_SECONDS = 2.0
KEY_ROLES = (ROLE_KEY, ROLE_TENANT_ADMIN)
DEFAULT_ROTATION_GRACE = timedelta(days=1)


class TenantExists(Exception):
    pass


class NotFound(Exception):
    pass


class Denial(Enum):
    INVALID = "invalid_api_key"
    EXPIRED = "expired_api_key"
    REVOKED = "revoked_api_key"




@dataclass(frozen=True)
class Tenant:
    id: str
    name: str
    created_at: datetime
    serve_successor: bool = False


@dataclass(frozen=True)
class KeyRecord:
    """A key's row as administrators see it (the digests stay inside the store)."""
    id: str
    tenant_id: str
    name: str
    role: str
    labels: dict
    allowed_models: tuple[str, ...]
    quotas: tuple[Quota, ...]
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    rotated_at: datetime | None
    previous_valid_until: datetime | None
    rotation_period_days: int
    rotation_grace_seconds: int
    next_rotation_at: datetime | None
    rotated_secret_pending: bool
    # The key's tenant's opt-in (tenants.serve_successor), as of when the row was read.
    serve_successor: bool = False

    def status(self, now: datetime) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.expires_at is not None and self.expires_at <= now:
            return "expired"
        return "active"

    def identity(self) -> Identity:
        return Identity(tenant_id=self.tenant_id, key_id=self.id, role=self.role, models=self.allowed_models,
                        quotas=self.quotas, serve_successor=self.serve_successor)


@dataclass(frozen=True)
class _Cached:
    until: float
    record: KeyRecord
    secret_sha256: str
    previous_secret_sha256: str | None


def _record(row) -> KeyRecord:
    return KeyRecord(
        id=row.id, tenant_id=row.tenant_id, name=row.name, role=row.role, labels=dict(row.labels or {}),
        allowed_models=tuple(row.allowed_models or ()), quotas=tuple(Quota(*q) for q in row.quotas or ()),
        created_at=as_utc(row.created_at), expires_at=as_utc(row.expires_at), revoked_at=as_utc(row.revoked_at),
        rotated_at=as_utc(row.rotated_at), previous_valid_until=as_utc(row.previous_valid_until),
        rotation_period_days=row.rotation_period_days, rotation_grace_seconds=row.rotation_grace_seconds,
        next_rotation_at=as_utc(row.next_rotation_at), rotated_secret_pending=row.pending_secret is not None,
        serve_successor=bool(row.serve_successor))


def _keys():
    """SELECT of key rows with their tenant's settings (every key has a tenant: api_keys.tenant_id is a foreign
    key)."""
    return sa.select(api_keys, tenants.c.serve_successor).join(tenants, tenants.c.id == api_keys.c.tenant_id)


# The hot path's lookup, built once: SQLAlchemy memoizes a statement's cache key on the object, so the statement
# reused costs no key generation per call (half the CPU of a lookup, which every unknown key id costs).
_KEY_BY_ID = _keys().where(api_keys.c.id == sa.bindparam("key_id"))


def _tenant(row) -> Tenant:
    return Tenant(row.id, row.name, as_utc(row.created_at), bool(row.serve_successor))


class KeyStore:
    def __init__(self, engine: sa.Engine, sealer: Sealer, *, clock: Callable[[], datetime] | None = None,
                 cache_seconds: float = VERIFY_CACHE_SECONDS) -> None:
        self._engine = engine
        self._sealer = sealer
        self._now = clock or (lambda: datetime.now(UTC))
        self._cache_seconds = cache_seconds
        self._cache: dict[str, _Cached] = {}

    def now(self) -> datetime:
        return self._now()

    # Tenants

    def create_tenant(self, name: str) -> Tenant:
        tenant = Tenant("ten_" + secrets.token_hex(8), name, self._now())
        try:
            with self._engine.begin() as conn:
                conn.execute(tenants.insert().values(id=tenant.id, name=name, created_at=tenant.created_at))
        except sa.exc.IntegrityError:
            raise TenantExists(name) from None
        return tenant

    def tenant_exists(self, tenant_id: str) -> bool:
        with self._engine.connect() as conn:
            return conn.execute(sa.select(tenants.c.id).where(tenants.c.id == tenant_id)).first() is not None

    def list_tenants(self) -> list[Tenant]:
        with self._engine.connect() as conn:
            rows = conn.execute(sa.select(tenants).order_by(tenants.c.created_at, tenants.c.id)).all()
        return [_tenant(r) for r in rows]

    def get_tenant(self, tenant_id: str) -> Tenant:
        with self._engine.connect() as conn:
            row = conn.execute(sa.select(tenants).where(tenants.c.id == tenant_id)).first()
        if row is None:
            raise NotFound(tenant_id)
        return _tenant(row)

    def update_tenant(self, tenant_id: str, *, serve_successor: bool | None = None) -> Tenant:
        """Changes the given settings (None: unchanged). Keys of this tenant cached here are dropped, so the change
        applies at once on this replica; the others see it within the verification cache's bound."""
        values = {} if serve_successor is None else {"serve_successor": serve_successor}
        if values:
            with self._engine.begin() as conn:
                if conn.execute(tenants.update().where(tenants.c.id == tenant_id).values(**values)).rowcount != 1:
                    raise NotFound(tenant_id)
            for key_id in [k for k, c in list(self._cache.items()) if c.record.tenant_id == tenant_id]:
                self._cache.pop(key_id, None)
        return self.get_tenant(tenant_id)

    # Keys

    def create_key(self, tenant_id: str, name: str, *, role: str = ROLE_KEY, labels: dict | None = None,
                   allowed_models: tuple[str, ...] = (), quotas: tuple[Quota, ...] = (),
                   expires_at: datetime | None = None, rotation_period_days: int = 0,
                   rotation_grace_seconds: int = int(DEFAULT_ROTATION_GRACE.total_seconds())) -> tuple[KeyRecord, str]:
        """Returns the key and its secret; the secret is never stored."""
        key_id, api_key, secret_sha256 = keys.new_key()
        now = self._now()
        with self._engine.begin() as conn:
            conn.execute(api_keys.insert().values(
                id=key_id, tenant_id=tenant_id, name=name, secret_sha256=secret_sha256, created_at=now, role=role,
                labels=labels or {}, allowed_models=list(allowed_models),
                quotas=[[q.window_seconds, q.max_requests, q.max_tokens] for q in quotas], expires_at=expires_at,
                rotation_period_days=rotation_period_days, rotation_grace_seconds=rotation_grace_seconds,
                next_rotation_at=now + timedelta(days=rotation_period_days) if rotation_period_days else None))
        return self.get_key(tenant_id, key_id), api_key

    def get_key(self, tenant_id: str, key_id: str) -> KeyRecord:
        with self._engine.connect() as conn:
            row = conn.execute(_keys().where(
                api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id)).first()
        if row is None:
            raise NotFound(key_id)
        return _record(row)

    def list_keys(self, tenant_id: str, *, include_revoked: bool = False) -> list[KeyRecord]:
        query = _keys().where(api_keys.c.tenant_id == tenant_id).order_by(api_keys.c.created_at)
        if not include_revoked:
            query = query.where(api_keys.c.revoked_at.is_(None))
        with self._engine.connect() as conn:
            return [_record(r) for r in conn.execute(query)]

    def rotate_key(self, tenant_id: str, key_id: str, grace: timedelta | None = None) -> tuple[KeyRecord, str]:
        """A new secret for the same key id; the current one stays valid for `grace` (default: the key's)."""
        record = self.get_key(tenant_id, key_id)
        if record.revoked_at is not None:
            raise NotFound(key_id)
        grace = grace if grace is not None else timedelta(seconds=record.rotation_grace_seconds)
        api_key = self._rotate(record, grace, seal=False)
        return self.get_key(tenant_id, key_id), api_key

    def _rotate(self, record: KeyRecord, grace: timedelta, *, seal: bool) -> str | None:
        """Swaps the secret unless another replica rotated this key meanwhile (then returns None)."""
        now = self._now()
        new_secret = keys.new_secret()
        api_key = keys.format_key(record.id, new_secret)
        values = {
            "previous_secret_sha256": api_keys.c.secret_sha256, "secret_sha256": keys.digest(new_secret),
            "previous_valid_until": now + grace, "rotated_at": now,
            "next_rotation_at": now + timedelta(days=record.rotation_period_days)
            if record.rotation_period_days else None,
            "pending_secret": self._sealer.seal(api_key, record.id) if seal else None,
        }
        with self._engine.begin() as conn:
            done = conn.execute(api_keys.update().where(
                api_keys.c.id == record.id, api_keys.c.revoked_at.is_(None),
                api_keys.c.rotated_at.is_(None) if record.rotated_at is None
                else api_keys.c.rotated_at == record.rotated_at,
            ).values(**values)).rowcount
        self._cache.pop(record.id, None)
        return api_key if done == 1 else None

    def rotate_due(self) -> list[KeyRecord]:
        """Automatic rotations that are due (each replica calls this; a key is rotated by exactly one of them). The
        new secret is kept sealed until the tenant's admin retrieves it."""
        with self._engine.connect() as conn:
            rows = conn.execute(_keys().where(
                api_keys.c.next_rotation_at <= self._now(), api_keys.c.revoked_at.is_(None))).all()
        rotated = []
        for row in rows:
            record = _record(row)
            if self._rotate(record, timedelta(seconds=record.rotation_grace_seconds), seal=True) is not None:
                rotated.append(record)
        return rotated

    def take_rotated_secret(self, tenant_id: str, key_id: str) -> str:
        """The secret the last automatic rotation made, once: it is erased in the same transaction."""
        with self._engine.begin() as conn:
            row = conn.execute(sa.select(api_keys.c.pending_secret).where(
                api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id,
                api_keys.c.pending_secret.is_not(None))).first()
            if row is None:
                raise NotFound(key_id)
            cleared = conn.execute(api_keys.update().where(
                api_keys.c.id == key_id, api_keys.c.pending_secret == row.pending_secret,
            ).values(pending_secret=None)).rowcount
        if cleared != 1:  # another replica handed it out first
            raise NotFound(key_id)
        return self._sealer.open(row.pending_secret, key_id)

    def revoke_key(self, tenant_id: str, key_id: str) -> KeyRecord:
        with self._engine.begin() as conn:
            conn.execute(api_keys.update().where(
                api_keys.c.id == key_id, api_keys.c.tenant_id == tenant_id, api_keys.c.revoked_at.is_(None),
            ).values(revoked_at=self._now(), pending_secret=None, next_rotation_at=None))
        self._cache.pop(key_id, None)
        return self.get_key(tenant_id, key_id)

    # Verification (the hot path)

    def _load(self, key_id: str) -> _Cached | None:
        now = time.monotonic()
        hit = self._cache.get(key_id)
        if hit is not None and hit.until > now:
            return hit
        with self._engine.connect() as conn:
            row = conn.execute(_KEY_BY_ID, {"key_id": key_id}).first()
        if row is None:
            self._cache.pop(key_id, None)
            return None
        if len(self._cache) > 100_000:
            self._cache.clear()
        cached = _Cached(now + self._cache_seconds, _record(row), row.secret_sha256, row.previous_secret_sha256)
        self._cache[key_id] = cached
        return cached

    def _secret_valid(self, cached: _Cached, secret: str) -> bool:
        """The current secret, or the previous one inside its grace window (both compared, in constant time; the
        presented secret is hashed once)."""
        presented = keys.digest(secret)
        current = hmac.compare_digest(presented, cached.secret_sha256)
        previous = cached.previous_secret_sha256 is not None and hmac.compare_digest(presented,
                                                                                     cached.previous_secret_sha256)
        until = cached.record.previous_valid_until
        return current or (previous and until is not None and self._now() < until)

    def verify(self, api_key: str) -> KeyRecord | Denial:
        parsed = keys.parse(api_key)
        if parsed is None:
            return Denial.INVALID
        key_id, secret = parsed
        cached = self._load(key_id)
        if cached is None:
            keys.matches(secret, keys.digest(""))  # same work as a real comparison
            return Denial.INVALID
        if not self._secret_valid(cached, secret):
            # Perhaps rotated on another replica since this row was cached: a new secret works at once.
            self._cache.pop(key_id, None)
            cached = self._load(key_id)
            if cached is None or not self._secret_valid(cached, secret):
                return Denial.INVALID
        record, now = cached.record, self._now()
        # Only a caller who holds a valid secret learns that the key is revoked or expired.
        if record.revoked_at is not None:
            return Denial.REVOKED
        if record.expires_at is not None and record.expires_at <= now:
            return Denial.EXPIRED
        return record
