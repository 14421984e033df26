"""Database URLs: postgresql:// means psycopg 3, with a pre-pinged pool; SQLite URLs are left as they are."""

from llmaas.common.db import database_url, make_engine


def test_postgresql_urls_use_psycopg_3():
    for url in ("postgresql://u:p@db.example:5432/auth", "postgres://u:p@db.example:5432/auth"):
        parsed = database_url(url)
        assert parsed.drivername == "postgresql+psycopg"
        assert (parsed.host, parsed.port, parsed.database, parsed.password) == ("db.example", 5432, "auth", "p")
    assert database_url("postgresql+psycopg2://u@h/db").drivername == "postgresql+psycopg2"  # an explicit choice
    assert database_url("sqlite:////tmp/x.db").drivername == "sqlite"


def test_postgresql_engine_settings_without_connecting():
    engine = make_engine("postgresql://u@db.example/auth?sslmode=require")  # engines connect lazily
    assert engine.dialect.driver == "psycopg" and engine.pool._pre_ping
    assert engine.url.query == {"sslmode": "require"}
    engine.dispose()


def test_sqlite_engine_is_unchanged(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'x.db'}")
    assert engine.dialect.name == "sqlite" and not engine.pool._pre_ping
