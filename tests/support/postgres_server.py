"""A real, throwaway PostgreSQL server on an ephemeral loopback port, its cluster in a temporary directory.

Built for speed, not durability (no fsync: the data is deleted at the end anyway). Its time zone is deliberately not
UTC, so code that assumes timestamps come back in UTC fails here rather than on a customer's server.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import psycopg
from psycopg import sql

from tests.support.ports import free_base_port

SUPERUSER = "llmaas"
SERVER_TIMEZONE = "Asia/Kathmandu"  # UTC+05:45: no whole-hour offset, no DST


def _bin_dir() -> Path:
    """Where initdb and postgres are: PATH first, else Debian's versioned directory (newest version)."""
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not candidates:
        raise RuntimeError("PostgreSQL not found: bash deploy/setup.sh installs it (Debian package postgresql)")
    return Path(candidates[-1]).parent


def _run_as() -> dict:
    """initdb and postgres refuse to run as root: as root, run them as the postgres system user."""
    if os.geteuid() != 0:
        return {}
    try:
        user = pwd.getpwnam("postgres")
    except KeyError:
        raise RuntimeError("running as root needs the postgres system user (created by the postgresql package)") from None
    return {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}


def _wait_ready(proc: subprocess.Popen, url: str, log: Path) -> None:
    deadline = time.monotonic() + 30
    while True:
        try:
            psycopg.connect(url, connect_timeout=1).close()
            return
        except psycopg.OperationalError:  # not listening yet, or "the database system is starting up"
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("postgres did not start:\n" + log.read_text()[-3000:]) from None
            time.sleep(0.05)


def _stop(proc: subprocess.Popen) -> None:
    # SIGINT is PostgreSQL's fast shutdown: it disconnects clients (pooled connections a test left open) instead of
    # waiting for them, as SIGTERM's smart shutdown would.
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextlib.contextmanager
def running_postgres() -> Iterator[str]:
    """Yields postgresql://llmaas@127.0.0.1:<port>/postgres (superuser, trust authentication, loopback only)."""
    bin_dir, as_user = _bin_dir(), _run_as()
    root = Path(tempfile.mkdtemp(prefix="llmaas-pg-"))
    try:
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        data, log = root / "data", root / "postgres.log"
        initdb = subprocess.run([bin_dir / "initdb", "-D", data, "-U", SUPERUSER, "--auth=trust", "--encoding=UTF8",
                                 "--locale=C", "--no-sync", "--no-instructions"],
                                cwd=root, capture_output=True, text=True, **as_user)
        if initdb.returncode != 0:
            raise RuntimeError(f"initdb failed:\n{initdb.stdout}{initdb.stderr}")
        port = free_base_port(span=1)
        settings = {"listen_addresses": "127.0.0.1", "port": port, "unix_socket_directories": root,
                    "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",
                    "max_connections": 200, "timezone": SERVER_TIMEZONE}
        argv = [bin_dir / "postgres", "-D", data]
        for name, value in settings.items():
            argv += ["-c", f"{name}={value}"]
        with open(log, "wb") as out:
            proc = subprocess.Popen(argv, cwd=root, stdout=out, stderr=subprocess.STDOUT, **as_user)
        url = f"postgresql://{SUPERUSER}@127.0.0.1:{port}/postgres"
        try:
            _wait_ready(proc, url, log)
            yield url
        finally:
            _stop(proc)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def fresh_database(server_url: str) -> Iterator[str]:
    """A new empty database on that server for the duration (dropped after, even with connections still open)."""
    name = "test_" + secrets.token_hex(6)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield server_url.rsplit("/", 1)[0] + "/" + name
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
