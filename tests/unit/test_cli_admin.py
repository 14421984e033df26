"""`llmaas tenants|keys|audit`: the CLI against the real AuthServicer, served in-process on an ephemeral port."""

from __future__ import annotations

import asyncio
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
import sqlalchemy as sa
from llmaas.auth.authorizer import Authorizer
from llmaas.auth.servicer import AuthServicer
from llmaas.auth.tables import audit_events
from llmaas.auth.v1 import auth_pb2_grpc
from llmaas.cli.main import app
from llmaas.common.server import ErrorInterceptor
from typer.testing import CliRunner

from tests.support.auth_store import SECRET, audit_log, auth_engine, key_store

ADMIN = "admin-token-for-cli-tests"
KEY_ID = re.compile(r"created key ([0-9a-f]{16})")
SECRET_LINE = re.compile(r"^(sk-llmaas-[0-9a-f]{16}-\S+)$", re.M)


@dataclass
class Server:
    address: str
    engine: sa.Engine


@pytest.fixture(scope="module")
def server(tmp_path_factory) -> Iterator[Server]:
    """The auth service as __main__ assembles it (minus ext_authz and rotation), in a thread with its own loop."""
    engine = auth_engine(f"sqlite:///{tmp_path_factory.mktemp('cli-admin') / 'auth.db'}")
    loop = asyncio.new_event_loop()

    async def start():
        store, audit = key_store(engine), audit_log(engine)
        grpc_server = grpc.aio.server(interceptors=[ErrorInterceptor()])
        auth_pb2_grpc.add_AuthServiceServicer_to_server(
            AuthServicer(store, audit, Authorizer(store, audit, ADMIN), ADMIN, SECRET), grpc_server)
        port = grpc_server.add_insecure_port("127.0.0.1:0")
        await grpc_server.start()
        return grpc_server, audit, port

    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    grpc_server, audit, port = asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        yield Server(f"127.0.0.1:{port}", engine)
    finally:
        asyncio.run_coroutine_threadsafe(grpc_server.stop(None), loop).result(10)
        asyncio.run_coroutine_threadsafe(audit.close(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
        engine.dispose()


@pytest.fixture(scope="module")
def cli(server):
    runner = CliRunner()
    env = {"COLUMNS": "300", "LLMAAS_AUTH_ADDR": server.address, "LLMAAS_ADMIN_TOKEN": ADMIN}

    def invoke(*args: str, **extra_env):
        result = runner.invoke(app, list(args), env={**env, **extra_env})
        assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
        return result

    return invoke


@pytest.fixture(scope="module")
def tenant(cli) -> str:
    result = cli("tenants", "create", "acme")
    assert result.exit_code == 0, result.output
    return re.search(r"created tenant (ten_[0-9a-f]+) \(acme\)", result.output).group(1)


def _create_key(cli, tenant: str, *args: str) -> tuple[str, str, str]:
    result = cli("keys", "create", "--tenant", tenant, *args)
    assert result.exit_code == 0, result.output
    return KEY_ID.search(result.output).group(1), SECRET_LINE.search(result.output).group(1), result.output


def _row(output: str, needle: str) -> str:
    return next(line for line in output.splitlines() if needle in line)


def _cells(output: str, key_id: str) -> list[str]:
    """The cells of a key's table row, its continuation lines (one list item per line) joined by spaces."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if key_id in line)
    rows = [lines[start]]
    for line in lines[start + 1:]:
        if not line.startswith("│") or line.split("│")[1].strip():  # a border, or the next key's row
            break
        rows.append(line)
    columns = zip(*(row.strip("│").split("│") for row in rows), strict=True)
    return [" ".join(part.strip() for part in column if part.strip()) for column in columns]


def test_tenants_create_and_list(cli, tenant):
    result = cli("tenants", "list")
    assert result.exit_code == 0, result.output
    assert tenant in _row(result.output, "acme")


def test_duplicate_tenant_is_one_red_line(cli, tenant):
    result = cli("tenants", "create", "acme")
    assert result.exit_code == 1
    assert result.stderr.strip() == "error: Tenant 'acme' already exists (tenant_exists)"
    assert "Traceback" not in result.output


def test_create_key_with_models_quotas_labels_then_list(cli, tenant):
    key_id, secret, output = _create_key(
        cli, tenant, "--name", "search-app", "--model", "mistral*", "--model", "qwen3:*",
        "--quota", "1m:requests=60", "--quota", "1d:requests=1000,tokens=200000",
        "--label", "team=search", "--label", "env=prod", "--expires", "2099-01-01", "--rotate-every-days", "30")
    assert "API key (shown once" in output and secret.startswith(f"sk-llmaas-{key_id}-")

    listed = cli("keys", "list", "--tenant", tenant)
    assert listed.exit_code == 0, listed.output
    cells = _cells(listed.output, key_id)
    assert cells[:8] == [key_id, "search-app", "key", "active", "mistral* qwen3:*",
                         "1m:requests=60 1d:requests=1000,tokens=200000", "env=prod team=search", "2099-01-01 00:00Z"]
    assert cells[8] == "" and re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\dZ", cells[9]) and cells[10] == ""
    assert secret not in listed.output  # never shown again


def test_tenant_by_name_and_tenant_admin_role(cli, tenant):
    key_id, _, output = _create_key(cli, "acme", "--name", "ops", "--role", "tenant_admin", "--expires", "30d")
    assert "(ops, tenant_admin)" in output
    assert "tenant_admin" in _row(cli("keys", "list", "--tenant", tenant).output, key_id)


def test_rotate_prints_new_secret_and_grace(cli, tenant):
    key_id, old, _ = _create_key(cli, tenant, "--name", "rotating")
    result = cli("keys", "rotate", "--tenant", tenant, key_id, "--grace", "1h")
    assert result.exit_code == 0, result.output
    new = SECRET_LINE.search(result.output).group(1)
    assert new != old and new.startswith(f"sk-llmaas-{key_id}-")
    assert "New API key (shown once" in result.output
    assert re.search(r"previous secret keeps working until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", result.output)


def test_revoke_then_list_all(cli, tenant):
    key_id, _, _ = _create_key(cli, tenant, "--name", "doomed")
    result = cli("keys", "revoke", "--tenant", tenant, key_id)
    assert result.exit_code == 0, result.output
    assert f"revoked key {key_id}" in result.output
    assert key_id not in cli("keys", "list", "--tenant", tenant).output
    assert "revoked" in _row(cli("keys", "list", "--tenant", tenant, "--all").output, key_id)
    again = cli("keys", "rotate", "--tenant", tenant, key_id)
    assert again.exit_code == 1 and "(key_not_found)" in again.stderr


def test_retrieve_without_automatic_rotation(cli, tenant):
    key_id, _, _ = _create_key(cli, tenant, "--name", "manual")
    result = cli("keys", "retrieve", "--tenant", tenant, key_id)
    assert result.exit_code == 1 and "(no_rotated_secret)" in result.stderr


def test_audit_list_with_filters(cli, tenant):
    key_id, _, _ = _create_key(cli, tenant, "--name", "audited")
    cli("keys", "revoke", "--tenant", tenant, key_id)
    result = cli("audit", "list", "--tenant", tenant, "--key", key_id)
    assert result.exit_code == 0, result.output
    assert "key.create" in _row(result.output, "key.create") and "rpc key.create" in result.output
    assert "key.revoke" in result.output and "2 records" in result.output
    only = cli("audit", "list", "--tenant", tenant, "--action", "tenant.create")
    assert "tenant.create" in only.output and "key.create" not in only.output
    page = cli("audit", "list", "--tenant", tenant, "--limit", "1")
    assert "1 record; more with --after" in page.output


def test_bad_input_is_a_usage_error(cli, tenant):
    for args in (["--quota", "1h"], ["--quota", "1h:calls=3"], ["--quota", "0s:requests=1"], ["--label", "novalue"],
                 ["--expires", "someday"], ["--expires", "2027-13-01"]):
        result = cli("keys", "create", "--tenant", tenant, "--name", "x", *args)
        assert result.exit_code == 2, (args, result.output)
    past = cli("keys", "create", "--tenant", tenant, "--name", "x", "--expires", "2001-01-01")
    assert past.exit_code == 1 and "expires_at must be in the future" in past.stderr


def test_wrong_token_and_unreachable_service(cli, server):
    result = cli("tenants", "list", "--token", "nope")
    assert result.exit_code == 1 and result.stderr.strip() == \
        "error: A valid admin token is required (invalid_admin_token)"
    down = cli("tenants", "list", "--auth", "127.0.0.1:1")
    assert down.exit_code == 1 and "cannot reach the auth service at 127.0.0.1:1" in down.stderr
    assert "Traceback" not in down.output


def test_connection_from_stack_file(cli, server, tmp_path: Path):
    missing = cli("tenants", "list", "--data-dir", str(tmp_path), LLMAAS_AUTH_ADDR=None, LLMAAS_ADMIN_TOKEN=None)
    assert missing.exit_code == 1 and "no running stack in" in missing.stderr
    (tmp_path / "stack.json").write_text(json.dumps({"admin_token": ADMIN, "services": {"auth": server.address}}))
    found = cli("tenants", "list", "--data-dir", str(tmp_path), LLMAAS_AUTH_ADDR=None, LLMAAS_ADMIN_TOKEN=None)
    assert found.exit_code == 0, found.output
    assert "acme" in found.output


def test_audit_verify_ok_then_broken_after_tampering(cli, server, tenant):
    ok = cli("audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert re.search(r"audit chain intact: \d+ records checked", ok.output)

    with server.engine.begin() as conn:
        seq, status = conn.execute(sa.select(audit_events.c.seq, audit_events.c.status)
                                   .where(audit_events.c.action == "key.create").limit(1)).one()
        conn.execute(audit_events.update().where(audit_events.c.seq == seq).values(status=500))
    try:
        broken = cli("audit", "verify")
        assert broken.exit_code == 1
        assert f"audit chain BROKEN at record {seq}: record {seq} does not match its hash" in broken.stderr
        assert f"({seq - 1} records verified before it)" in broken.stderr
    finally:
        with server.engine.begin() as conn:
            conn.execute(audit_events.update().where(audit_events.c.seq == seq).values(status=status))
