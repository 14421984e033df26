"""Every service's SQL storage on SQLite and on a real PostgreSQL server: same code, same migrations, same behaviour.

The unit tests of the stores (auth keys and audit, guard policies, metering ledger) are collected here again: their
fixtures build each store on `database_url`, SQLite-only in tests/unit and both backends here (tests/conftest.py).
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from llmaas.auth import tables as auth_tables
from llmaas.common.db import make_engine, migrate
from llmaas.guard import tables as guard_tables
from llmaas.guard.policy import Policy, PolicyStore
from llmaas.metering import tables as metering_tables
from llmaas.router.batch import tables as router_tables

from tests.support.auth_store import auth_engine, key_store
from tests.support.postgres_server import fresh_database
from tests.support.recollect import recollect
from tests.unit import test_audit, test_auth_abuse, test_auth_store, test_guard_service, test_ledger

pytestmark = pytest.mark.integration

# The stores' unit tests, with the fixtures that build each store on `database_url` (test_audit's `engine` is the
# same as test_auth_store's). The auth servicer's tests are in test_auth_service_backends.py: both call theirs
# `servicer`.
recollect(globals(), {
    test_auth_store: ("engine", "clock", "store", "tenant"),
    test_audit: (),
    test_auth_abuse: ("auth",),  # the aggregated records' counts, and the chain over them
    test_guard_service: ("servicer",),
    test_ledger: ("ledger",),
})

SERVICES = {
    "auth": auth_tables.metadata,
    "guard": guard_tables.metadata,
    "metering": metering_tables.metadata,
    "router": router_tables.metadata,  # files and batches
}


def _migrations(service: str) -> Path:
    if service == "router":
        return Path(router_tables.__file__).parent / "migrations"
    return Path(auth_tables.__file__).parent.parent / service / "migrations"


def _alembic_config(service: str, conn: sa.Connection) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(_migrations(service)))
    cfg.attributes["connection"] = conn
    return cfg


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_build_exactly_the_declared_schema(database_url, service):
    engine = make_engine(database_url)
    migrate(engine, _migrations(service))
    migrate(engine, _migrations(service))  # at every start: nothing left to do
    head = ScriptDirectory(str(_migrations(service))).get_current_head()
    with engine.connect() as conn:
        context = MigrationContext.configure(conn)
        assert context.get_current_revision() == head
        # What autogenerate would write next: nothing, if the migrations and tables.py agree on this backend.
        assert compare_metadata(context, SERVICES[service]) == []


@pytest.mark.parametrize("service", SERVICES)
def test_migrations_downgrade_to_nothing_and_back(database_url, service):
    engine = make_engine(database_url)
    migrate(engine, _migrations(service))
    with engine.begin() as conn:
        command.downgrade(_alembic_config(service, conn), "base")
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == {"alembic_version"}
    migrate(engine, _migrations(service))
    with engine.connect() as conn:
        assert set(sa.inspect(conn).get_table_names()) == set(SERVICES[service].tables) | {"alembic_version"}


@pytest.mark.parametrize("service", SERVICES)
def test_replicas_starting_together_migrate_once(database_url, service):
    errors: list[BaseException] = []

    def start() -> None:
        try:
            migrate(make_engine(database_url), _migrations(service))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    replicas = [threading.Thread(target=start) for _ in range(4)]
    for t in replicas:
        t.start()
    for t in replicas:
        t.join()
    assert errors == []


def test_timestamps_come_back_aware_and_in_utc(database_url):
    # The test server's time zone is UTC+05:45: PostgreSQL hands timestamps back in it, SQLite hands them back
    # naive. Either way the store must return the instant it was given, in UTC.
    store = key_store(auth_engine(database_url))
    created = store.create_tenant("tz")
    (listed,) = store.list_tenants()
    assert listed.created_at == created.created_at
    assert listed.created_at.utcoffset().total_seconds() == 0


def test_replicas_setting_a_new_tenants_policy_at_once_all_succeed(database_url):
    engine = make_engine(database_url)
    migrate(engine, _migrations("guard"))
    default = Policy("enforce", 0.5)
    barrier, errors = threading.Barrier(8), []

    def replica(i: int) -> None:
        try:
            barrier.wait()
            PolicyStore(make_engine(database_url), default).set("ten_new", "shadow", 0.1 * (i % 4))
        except BaseException as e:  # noqa: BLE001 - reported by the assertion below
            errors.append(e)

    threads = [threading.Thread(target=replica, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert PolicyStore(engine, default).get("ten_new").mode == "shadow"


def test_postgresql_urls_use_psycopg_3(postgres_url):
    engine = make_engine(postgres_url)
    assert engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg"
    assert make_engine(postgres_url.replace("postgresql://", "postgres://", 1)).dialect.driver == "psycopg"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT 1")).scalar_one() == 1


def test_pooled_connections_the_server_closed_are_replaced(postgres_url):
    # Pre-ping: connections the server dropped (restart, failover, idle timeout) are never handed out.
    with fresh_database(postgres_url) as url:
        keys = key_store(auth_engine(url))
        tenant_id = keys.create_tenant("acme").id
        with make_engine(postgres_url).connect() as admin:
            killed = admin.execute(sa.text("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                                           " WHERE datname = :d"), {"d": url.rsplit("/", 1)[1]}).scalar_one()
        assert killed >= 1
        assert keys.tenant_exists(tenant_id)
