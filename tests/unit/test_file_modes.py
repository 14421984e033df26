"""Files at rest (issue 20): databases, logs and secrets readable by their owner only, in a 0700 data directory."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import sqlalchemy as sa
from llmaas.common.db import make_engine
from llmaas.stack.supervisor import open_private_log, private_dir
from llmaas.stack.up import _write_private


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_data_and_log_directories_are_0700_even_if_they_existed(tmp_path):
    data = tmp_path / "new" / "data"
    private_dir(data)
    assert mode(data) == 0o700
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    loose.chmod(0o755)
    private_dir(loose)
    assert mode(loose) == 0o700


def test_logs_are_0600_even_if_they_existed(tmp_path):
    fresh = tmp_path / "fresh.log"
    with open_private_log(fresh) as f:
        f.write(b"one\n")
    old = tmp_path / "old.log"
    old.write_bytes(b"before\n")
    old.chmod(0o644)
    with open_private_log(old) as f:
        f.write(b"after\n")
    assert mode(fresh) == 0o600 and mode(old) == 0o600
    assert old.read_bytes() == b"before\nafter\n"  # appended, not truncated


def test_sqlite_database_wal_and_shm_are_0600(tmp_path):
    previous = os.umask(0o022)  # the usual umask: the files must be private anyway
    try:
        path = tmp_path / "auth.db"
        engine = make_engine(f"sqlite:///{path}")
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE t (x INTEGER)"))
            conn.execute(sa.text("INSERT INTO t VALUES (1)"))
        files = sorted(tmp_path.iterdir())
        assert {p.name for p in files} >= {"auth.db", "auth.db-wal", "auth.db-shm"}
        assert {p.name: oct(mode(p)) for p in files} == {p.name: oct(0o600) for p in files}
        engine.dispose()
    finally:
        os.umask(previous)


def test_an_existing_database_is_made_private(tmp_path):
    path = tmp_path / "metering.db"
    path.touch()
    path.chmod(0o644)
    make_engine(f"sqlite:///{path}").dispose()
    assert mode(path) == 0o600


def test_secrets_files_are_0600(tmp_path):
    previous = os.umask(0o022)
    try:
        _write_private(tmp_path / "admin.json", {"admin_token": "x"})
    finally:
        os.umask(previous)
    assert mode(tmp_path / "admin.json") == 0o600
