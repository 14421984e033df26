"""Keys: verification, expiry, revocation, rotation with grace, automatic rotation, replicas sharing a database."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
import sqlalchemy as sa
from llmaas.auth import keys
from llmaas.auth.store import Denial, KeyStore, NotFound
from llmaas.auth.tables import api_keys
from llmaas.common.identity import ROLE_TENANT_ADMIN, Quota

from tests.support.auth_store import Clock, auth_engine, key_store


@pytest.fixture
def engine(tmp_path):
    return auth_engine(f"sqlite:///{tmp_path / 'auth.db'}")


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def store(engine, clock) -> KeyStore:
    return key_store(engine, clock)


@pytest.fixture
def tenant(store) -> str:
    return store.create_tenant("acme").id


def test_key_carries_its_policy_into_the_identity(store, tenant):
    record, api_key = store.create_key(tenant, "app", labels={"team": "search"}, allowed_models=("mistral*",),
                                       quotas=(Quota(60, max_requests=10),))
    verified = store.verify(api_key)
    assert verified.id == record.id and verified.labels == {"team": "search"}
    identity = verified.identity()
    assert identity.tenant_id == tenant and identity.models == ("mistral*",)
    assert identity.quotas == (Quota(60, 10, 0),)
    assert identity.may_use("mistral-small3.2:24b") and not identity.may_use("qwen3:14b")


def test_wrong_secret_and_unknown_key_are_invalid(store, tenant):
    _, api_key = store.create_key(tenant, "app")
    assert store.verify(api_key[:-1] + ("A" if api_key[-1] != "A" else "B")) is Denial.INVALID
    assert store.verify("sk-llmaas-0123456789abcdef-nothere") is Denial.INVALID
    assert store.verify("not a key") is Denial.INVALID


def test_only_the_digest_is_stored(engine, store, tenant):
    _, api_key = store.create_key(tenant, "app")
    with engine.connect() as conn:
        dump = repr(conn.execute(sa.select(api_keys)).all())
    # keys.parse, not rsplit("-"): the secret is urlsafe base64 and may itself contain "-".
    assert keys.parse(api_key)[1] not in dump


def test_expiry(store, tenant, clock):
    _, api_key = store.create_key(tenant, "app", expires_at=clock.now + timedelta(hours=1))
    assert not isinstance(store.verify(api_key), Denial)
    clock.advance(hours=1)
    assert store.verify(api_key) is Denial.EXPIRED


def test_revocation(store, tenant):
    record, api_key = store.create_key(tenant, "app")
    store.revoke_key(tenant, record.id)
    assert store.verify(api_key) is Denial.REVOKED
    assert store.get_key(tenant, record.id).status(store.now()) == "revoked"


def test_rotation_keeps_the_old_secret_for_the_grace_period(store, tenant, clock):
    record, old = store.create_key(tenant, "app")
    rotated, new = store.rotate_key(tenant, record.id, timedelta(minutes=10))
    assert rotated.id == record.id and new != old
    assert not isinstance(store.verify(old), Denial) and not isinstance(store.verify(new), Denial)
    clock.advance(minutes=10)
    assert store.verify(old) is Denial.INVALID
    assert not isinstance(store.verify(new), Denial)


def test_a_second_rotation_ends_the_first_grace(store, tenant):
    record, first = store.create_key(tenant, "app")
    _, second = store.rotate_key(tenant, record.id, timedelta(hours=1))
    _, third = store.rotate_key(tenant, record.id, timedelta(hours=1))
    assert store.verify(first) is Denial.INVALID
    assert not isinstance(store.verify(second), Denial) and not isinstance(store.verify(third), Denial)


def test_automatic_rotation_seals_the_new_secret_until_retrieved_once(engine, store, tenant, clock):
    record, old = store.create_key(tenant, "app", rotation_period_days=30, rotation_grace_seconds=3600)
    assert store.rotate_due() == []
    clock.advance(days=30)
    assert [r.id for r in store.rotate_due()] == [record.id]
    assert store.rotate_due() == []  # claimed once
    assert store.get_key(tenant, record.id).rotated_secret_pending
    with engine.connect() as conn:
        sealed = conn.execute(sa.select(api_keys.c.pending_secret)).scalar_one()
    new = store.take_rotated_secret(tenant, record.id)
    assert new.rsplit("-", 1)[1] not in sealed  # stored sealed, never in clear
    assert not isinstance(store.verify(new), Denial) and not isinstance(store.verify(old), Denial)
    with pytest.raises(NotFound):
        store.take_rotated_secret(tenant, record.id)  # once
    clock.advance(hours=1)
    assert store.verify(old) is Denial.INVALID
    assert store.get_key(tenant, record.id).next_rotation_at == clock.now - timedelta(hours=1) + timedelta(days=30)


def test_two_replicas_racing_for_a_due_rotation_rotate_once(engine, clock, tenant, store):
    record, _ = store.create_key(tenant, "app", rotation_period_days=1)
    clock.advance(days=1)
    other = key_store(engine, clock)
    assert len(store.rotate_due()) + len(other.rotate_due()) == 1


def test_revocation_reaches_another_replica_within_the_cache_bound(engine, tenant, store):
    record, api_key = store.create_key(tenant, "app")
    replica = key_store(engine, cache_seconds=0.3)
    assert not isinstance(replica.verify(api_key), Denial)  # now cached
    store.revoke_key(tenant, record.id)
    deadline = time.monotonic() + 0.3 + 0.2
    while not isinstance(replica.verify(api_key), Denial):
        assert time.monotonic() < deadline, "revocation not seen within the cache bound"
        time.sleep(0.02)
    assert replica.verify(api_key) is Denial.REVOKED


def test_roles_and_tenant_isolation(store, tenant):
    other = store.create_tenant("globex").id
    admin, _ = store.create_key(tenant, "ops", role=ROLE_TENANT_ADMIN)
    assert admin.role == ROLE_TENANT_ADMIN
    with pytest.raises(NotFound):
        store.get_key(other, admin.id)
    assert store.list_keys(other) == []


def test_a_rotation_on_another_replica_accepts_the_new_secret_at_once(engine, tenant, store):
    record, old = store.create_key(tenant, "app")
    replica = key_store(engine, cache_seconds=3600)
    assert not isinstance(replica.verify(old), Denial)  # cached for an hour
    _, new = store.rotate_key(tenant, record.id, timedelta(minutes=5))
    assert not isinstance(replica.verify(new), Denial)


def test_tenant_opt_in_reaches_its_keys_identities(store, tenant):
    other = store.create_tenant("other").id
    _, key = store.create_key(tenant, "app")
    _, other_key = store.create_key(other, "app")
    assert store.get_tenant(tenant).serve_successor is False and store.verify(key).identity().serve_successor is False
    assert store.update_tenant(tenant, serve_successor=True).serve_successor is True
    assert {t.id: t.serve_successor for t in store.list_tenants()} == {tenant: True, other: False}
    assert store.verify(key).identity().serve_successor is True
    assert store.get_key(tenant, store.verify(key).id).serve_successor is True
    assert store.verify(other_key).identity().serve_successor is False
    assert store.update_tenant(tenant).serve_successor is True  # nothing given: unchanged
    with pytest.raises(NotFound):
        store.update_tenant("ten_nope", serve_successor=True)


def test_tenant_update_applies_at_once_here_and_within_the_cache_bound_elsewhere(engine, clock, tenant):
    here, elsewhere = key_store(engine, clock, cache_seconds=0.3), key_store(engine, clock, cache_seconds=0.3)
    _, key = here.create_key(tenant, "app")
    assert not here.verify(key).serve_successor and not elsewhere.verify(key).serve_successor  # both cached now
    here.update_tenant(tenant, serve_successor=True)
    assert here.verify(key).serve_successor  # this replica dropped the tenant's cached keys
    assert not elsewhere.verify(key).serve_successor  # another replica: until its cached row expires
    time.sleep(0.35)
    assert elsewhere.verify(key).serve_successor


def test_opt_in_migration_keeps_existing_tenants_off_and_downgrades(tmp_path):
    from alembic import command
    from alembic.config import Config
    from llmaas.common.db import make_engine

    from tests.support.auth_store import MIGRATIONS

    engine = make_engine(f"sqlite:///{tmp_path / 'old.db'}")
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))

    def to(revision: str, up: bool = True) -> None:
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            (command.upgrade if up else command.downgrade)(cfg, revision)

    to("0002")
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO tenants (id, name, created_at) VALUES ('ten_old', 'old', '2026-01-01')"))
    to("head")
    store = key_store(engine)
    assert store.get_tenant("ten_old").serve_successor is False
    assert store.update_tenant("ten_old", serve_successor=True).serve_successor is True
    to("0002", up=False)
    with engine.connect() as conn:
        assert "serve_successor" not in {c["name"] for c in sa.inspect(conn).get_columns("tenants")}
