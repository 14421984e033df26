"""`llmaas tenants ...`, `llmaas keys ...`, `llmaas audit ...`: the admin API of the auth service, over gRPC.

Every command talks to llmaas.auth.v1.AuthService with the platform admin token as a bearer. Where: `--auth` and
`--token` (or LLMAAS_AUTH_ADDR and LLMAAS_ADMIN_TOKEN), else the stack.json that `llmaas up` writes into its data
directory (`--data-dir`, `.llmaas` by default). A service error is one red line on stderr and exit code 1.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import TypeVar

import grpc
import typer
from google.protobuf import timestamp_pb2
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from llmaas.auth.v1 import auth_pb2, auth_pb2_grpc
from llmaas.common.errors import ERROR_METADATA_KEY, from_rpc_error
from llmaas.stack.up import STACK_FILE

tenants_app = typer.Typer(help="Tenants (platform admin).", no_args_is_help=True)
keys_app = typer.Typer(help="A tenant's API keys: create, list, rotate, revoke.", no_args_is_help=True)
audit_app = typer.Typer(help="The audit trail: a tenant's records, and the hash chain's integrity.",
                        no_args_is_help=True)
# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default, which squeezes them unreadable.
console = Console(width=None if Console().is_terminal else 200)
errors = Console(stderr=True)

TIMEOUT = 15.0
VERIFY_TIMEOUT = 600.0  # verify walks the whole chain

# Shared options of every command (typer declares them per command).
AUTH = typer.Option(None, "--auth", envvar="LLMAAS_AUTH_ADDR", show_default=False, metavar="HOST:PORT",
                    help="Auth service gRPC address (host:port). Default: the running stack's, from its stack.json.")
TOKEN = typer.Option(None, "--token", envvar="LLMAAS_ADMIN_TOKEN", show_default=False, metavar="TOKEN",
                     help="Platform admin token. Default: the running stack's, from its stack.json.")
DATA_DIR = typer.Option(Path(".llmaas"), "--data-dir", help="Data directory of the running `llmaas up`.")
TENANT = typer.Option(..., "--tenant", "-t", show_default=False, help="Tenant id (ten_...) or name.")


class Failed(Exception):
    """A failure to report as one line (exit code 1)."""


def _fail(message: str) -> typer.Exit:
    errors.print(f"[red]error:[/] {escape(message)}", soft_wrap=True)
    return typer.Exit(1)


# Connection


@dataclass(frozen=True)
class Connection:
    address: str
    token: str

    def call(self, method: str, request, *, timeout: float = TIMEOUT):
        """One unary RPC on AuthService; a grpc.RpcError becomes a Failed with the service's own message."""
        with grpc.insecure_channel(self.address) as channel:
            rpc = getattr(auth_pb2_grpc.AuthServiceStub(channel), method)
            try:
                return rpc(request, metadata=(("authorization", f"Bearer {self.token}"),), timeout=timeout)
            except grpc.RpcError as err:
                raise Failed(_rpc_message(err, self.address)) from None


def _rpc_message(err: grpc.RpcError, address: str) -> str:
    shaped = any(key == ERROR_METADATA_KEY for key, _ in err.trailing_metadata() or ())
    code = err.code()
    if not shaped and code == grpc.StatusCode.UNAVAILABLE:
        return f"cannot reach the auth service at {address} (is the stack running? see --auth)"
    if not shaped and code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return f"the auth service at {address} did not answer in time"
    if not shaped and code == grpc.StatusCode.UNIMPLEMENTED:
        return f"{address} is not an llmaas auth service"
    api = from_rpc_error(err, service="auth")
    return f"{api.message} ({api.code})" if api.code else api.message


def connect(auth: str | None, token: str | None, data_dir: Path) -> Connection:
    if auth and token:
        return Connection(auth, token)
    stack_file = data_dir / STACK_FILE
    try:
        stack = json.loads(stack_file.read_text())
        found = Connection(auth or stack["services"]["auth"], token or stack["admin_token"])
    except FileNotFoundError:
        raise Failed(f"no running stack in {data_dir} ({STACK_FILE} not found): start one with `llmaas up`, "
                     "or pass --auth and --token") from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise Failed(f"cannot read {stack_file}: {type(e).__name__}: {e}") from None
    return found


T = TypeVar("T")


def run(fn: Callable[[], T]) -> T:
    """Runs a command body; a Failed becomes one red line and exit code 1 (never a traceback)."""
    try:
        return fn()
    except Failed as e:
        raise _fail(str(e)) from None


def _tenant_id(conn: Connection, tenant: str) -> str:
    """Tenant ids pass through; anything else is looked up as a tenant name."""
    if tenant.startswith("ten_"):
        return tenant
    for t in conn.call("ListTenants", auth_pb2.ListTenantsRequest()).tenants:
        if t.name == tenant:
            return t.tenant_id
    raise Failed(f"no tenant named {tenant!r} (see `llmaas tenants list`)")


# Parsing

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^(\d+)([smhdw]?)$")


def parse_duration(text: str) -> int:
    """Seconds in '90', '90s', '15m', '1h', '30d', '2w'."""
    m = _DURATION.match(text.strip().lower())
    seconds = int(m.group(1)) * _UNITS[m.group(2) or "s"] if m else 0
    if not 0 < seconds < 2**32:
        raise typer.BadParameter(f"{text!r} is not a duration like 90s, 15m, 1h, 30d or 2w")
    return seconds


def format_duration(seconds: int) -> str:
    for unit in ("w", "d", "h", "m"):
        if seconds and seconds % _UNITS[unit] == 0:
            return f"{seconds // _UNITS[unit]}{unit}"
    return f"{seconds}s"


def parse_quota(text: str) -> auth_pb2.Quota:
    """'1h:requests=1000,tokens=200000' (either limit may be left out)."""
    window, sep, limits = text.partition(":")
    if not sep:
        raise typer.BadParameter(f"{text!r}: expected WINDOW:requests=N,tokens=M, e.g. 1h:requests=1000")
    quota = auth_pb2.Quota(window_seconds=parse_duration(window))
    for part in limits.split(","):
        name, _, value = part.partition("=")
        name = name.strip().lower()
        if name not in ("requests", "tokens") or not value.strip().isdigit() or not 0 < int(value) < 2**63:
            raise typer.BadParameter(f"{text!r}: limits are requests=N and tokens=M with N, M > 0")
        if name == "requests":
            quota.max_requests = int(value)
        else:
            quota.max_tokens = int(value)
    return quota


def format_quota(q: auth_pb2.Quota) -> str:
    limits = [f"requests={q.max_requests}"] if q.max_requests else []
    limits += [f"tokens={q.max_tokens}"] if q.max_tokens else []
    return f"{format_duration(q.window_seconds)}:{','.join(limits)}"


def parse_label(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise typer.BadParameter(f"{text!r}: labels are key=value")
    return key.strip(), value.strip()


def parse_expiry(text: str, now: dt.datetime) -> dt.datetime:
    """An ISO date or date-time (UTC unless it says otherwise), or a duration from now ('30d')."""
    if re.fullmatch(r"\d+[smhdw]", text.strip().lower()):
        return now + dt.timedelta(seconds=parse_duration(text))
    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise typer.BadParameter(f"{text!r} is neither a date (2027-01-01), a date-time (2027-01-01T12:00:00Z) "
                                 "nor a duration (30d)") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when


def _timestamp(value: dt.datetime) -> timestamp_pb2.Timestamp:
    ts = timestamp_pb2.Timestamp()
    ts.FromDatetime(value.astimezone(dt.UTC))
    return ts


# Formatting


def fmt_time(message, name: str, *, seconds: bool = False) -> str:
    if not message.HasField(name):
        return ""
    when = getattr(message, name).ToDatetime(tzinfo=dt.UTC)
    return when.strftime("%Y-%m-%d %H:%M:%SZ" if seconds else "%Y-%m-%d %H:%MZ")


_STATUS_STYLE = {"active": "green", "expired": "yellow", "revoked": "red"}


def _text(value: str, style: str = "") -> Text:
    return Text(value, style=style)  # never markup: names, labels and endpoints come from users


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _key_summary(key: auth_pb2.ApiKey) -> str:
    return f"{key.key_id} ({key.name}, {key.role}) in tenant {key.tenant_id}"


def _print_secret(title: str, secret: str) -> None:
    console.print(f"[bold yellow]{title}[/] (shown once, only its hash is kept: store it now)")
    console.print(Text(secret, style="bold"), soft_wrap=True)


# tenants


@tenants_app.command("create")
def tenants_create(
    name: str = typer.Argument(..., help="The tenant's name (unique)."),
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """Create a tenant."""
    def body():
        tenant = connect(auth, token, data_dir).call("CreateTenant", auth_pb2.CreateTenantRequest(name=name)).tenant
        console.print(Text.assemble("created tenant ", (tenant.tenant_id, "bold"), f" ({tenant.name})"))
    run(body)


@tenants_app.command("list")
def tenants_list(auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR) -> None:
    """Every tenant."""
    def body():
        tenants = connect(auth, token, data_dir).call("ListTenants", auth_pb2.ListTenantsRequest()).tenants
        table = Table(title="Tenants")
        for column in ("id", "name", "created"):
            table.add_column(column, no_wrap=column == "id")
        for t in tenants:
            table.add_row(_text(t.tenant_id), _text(t.name), fmt_time(t, "created_at"))
        console.print(table)
        console.print(_count(len(tenants), "tenant"))
    run(body)


# keys


class Role(str, Enum):
    key = "key"
    tenant_admin = "tenant_admin"


@keys_app.command("create")
def keys_create(
    tenant: str = TENANT,
    name: str = typer.Option(..., "--name", "-n", show_default=False, help="The key's name (e.g. the application)."),
    label: list[str] = typer.Option([], "--label", "-l", metavar="KEY=VALUE", help="key=value (repeatable)."),
    model: list[str] = typer.Option([], "--model", "-m", metavar="PATTERN", help="Allowed model id or pattern, e.g. 'mistral*' "
                                    "(repeatable; none: every model)."),
    quota: list[str] = typer.Option([], "--quota", "-q", metavar="WINDOW:LIMITS", help="WINDOW:requests=N,tokens=M, e.g. "
                                    "1m:requests=60 or 1d:tokens=1000000 (repeatable)."),
    expires: str = typer.Option(None, "--expires", show_default=False, metavar="DATE|DURATION",
                                help="Expiry: a date (2027-01-01, UTC), a date-time, or a duration from now (30d)."),
    rotate_every_days: int = typer.Option(0, "--rotate-every-days", min=0, max=3650, help="Rotate automatically every N days "
                                          "(0: never); the new secret is retrieved with `llmaas keys retrieve`."),
    rotation_grace: str = typer.Option("1d", "--rotation-grace", metavar="DURATION",
                                       help="How long the old secret keeps working after an automatic rotation."),
    role: Role = typer.Option(Role.key, "--role", help="key calls models; tenant_admin manages its tenant's keys "
                              "and reads its audit trail."),
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """Create an API key; its secret is printed once."""
    request = auth_pb2.CreateApiKeyRequest(
        name=name, role=role.value, labels=dict(parse_label(item) for item in label), allowed_models=model,
        quotas=[parse_quota(item) for item in quota], rotation_period_days=rotate_every_days,
        rotation_grace_seconds=parse_duration(rotation_grace))
    if expires:
        request.expires_at.CopyFrom(_timestamp(parse_expiry(expires, dt.datetime.now(dt.UTC))))

    def body():
        conn = connect(auth, token, data_dir)
        request.tenant_id = _tenant_id(conn, tenant)
        created = conn.call("CreateApiKey", request)
        console.print(Text.assemble("created key ", (created.key_id, "bold"), f" ({created.key.name}, "
                                    f"{created.key.role}) in tenant {created.key.tenant_id}"))
        _print_secret("API key", created.api_key)
    run(body)


def keys_table(keys, title: str) -> Table:
    table = Table(title=title)
    for column in ("id", "name", "role", "status", "models", "quotas", "labels", "expires", "rotated",
                   "next rotation", "pending secret"):
        # Ids stay on one line; lists go one item per line; nothing is ever cut (folded when too long).
        table.add_column(column, no_wrap=column == "id", overflow="fold")
    for k in keys:
        table.add_row(
            _text(k.key_id), _text(k.name), _text(k.role), _text(k.status, _STATUS_STYLE.get(k.status, "")),
            _text("\n".join(k.allowed_models) or "all"), _text("\n".join(format_quota(q) for q in k.quotas)),
            _text("\n".join(f"{name}={k.labels[name]}" for name in sorted(k.labels))),
            fmt_time(k, "expires_at"), fmt_time(k, "rotated_at"), fmt_time(k, "next_rotation_at"),
            _text("yes", "bold yellow") if k.rotated_secret_pending else "")
    return table


@keys_app.command("list")
def keys_list(
    tenant: str = TENANT,
    all_: bool = typer.Option(False, "--all", "-a", help="Include revoked keys."),
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """A tenant's keys (never their secrets)."""
    def body():
        conn = connect(auth, token, data_dir)
        tenant_id = _tenant_id(conn, tenant)
        keys = conn.call("ListApiKeys", auth_pb2.ListApiKeysRequest(tenant_id=tenant_id, include_revoked=all_)).keys
        console.print(keys_table(keys, f"API keys of {tenant_id}"))
        console.print(_count(len(keys), "key") + ("" if all_ else " (revoked ones hidden: --all)"))
    run(body)


@keys_app.command("rotate")
def keys_rotate(
    key_id: str = typer.Argument(..., help="The key id."),
    tenant: str = TENANT,
    grace: str = typer.Option(None, "--grace", show_default=False, metavar="DURATION", help="How long the old secret keeps working "
                              "(e.g. 1h, 7d; default: the key's rotation grace, one day unless set)."),
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """A new secret for the same key id; the old one keeps working for the grace period."""
    request = auth_pb2.RotateApiKeyRequest(key_id=key_id)
    if grace is not None:
        request.grace_seconds = parse_duration(grace)

    def body():
        conn = connect(auth, token, data_dir)
        request.tenant_id = _tenant_id(conn, tenant)
        rotated = conn.call("RotateApiKey", request)
        console.print(f"rotated key {escape(_key_summary(rotated.key))}")
        _print_secret("New API key", rotated.api_key)
        until = fmt_time(rotated.key, "previous_valid_until", seconds=True)
        console.print(f"The previous secret keeps working until {until}.")
    run(body)


@keys_app.command("revoke")
def keys_revoke(
    key_id: str = typer.Argument(..., help="The key id."),
    tenant: str = TENANT,
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """Revoke a key: every auth replica refuses it within seconds (the verification cache's lifetime)."""
    def body():
        conn = connect(auth, token, data_dir)
        key = conn.call("RevokeApiKey", auth_pb2.RevokeApiKeyRequest(tenant_id=_tenant_id(conn, tenant),
                                                                     key_id=key_id)).key
        console.print(f"[red]revoked[/] key {escape(_key_summary(key))} at {fmt_time(key, 'revoked_at', seconds=True)}")
    run(body)


@keys_app.command("retrieve")
def keys_retrieve(
    key_id: str = typer.Argument(..., help="The key id."),
    tenant: str = TENANT,
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """The secret an automatic rotation made, once (it is erased as it is handed out)."""
    def body():
        conn = connect(auth, token, data_dir)
        got = conn.call("RetrieveRotatedSecret", auth_pb2.RetrieveRotatedSecretRequest(
            tenant_id=_tenant_id(conn, tenant), key_id=key_id))
        console.print(f"key {escape(_key_summary(got.key))}, rotated {fmt_time(got.key, 'rotated_at', seconds=True)}")
        _print_secret("New API key", got.api_key)
        if got.key.HasField("previous_valid_until"):
            console.print("The previous secret keeps working until "
                          f"{fmt_time(got.key, 'previous_valid_until', seconds=True)}.")
    run(body)


# audit


def _tokens(e: auth_pb2.AuditEvent) -> str:
    return f"{e.prompt_tokens}/{e.completion_tokens}" if e.prompt_tokens or e.completion_tokens else ""


def audit_table(events, title: str) -> Table:
    table = Table(title=title)
    for column in ("seq", "time", "action", "key", "endpoint", "model", "status", "tokens in/out", "client",
                   "trace id"):
        table.add_column(column, justify="right" if column in ("seq", "status", "tokens in/out") else "left",
                         no_wrap=column in ("seq", "time", "trace id"), overflow="fold")
    for e in events:
        status_style = "" if e.status < 400 else "red"
        table.add_row(str(e.seq), fmt_time(e, "time", seconds=True), _text(e.action), _text(e.key_id or e.actor),
                      _text(e.endpoint), _text(e.model), _text(str(e.status) if e.status else "", status_style),
                      _tokens(e), _text(e.client_address), _text(e.trace_id))
    return table


@audit_app.command("list")
def audit_list(
    tenant: str = TENANT,
    key: str = typer.Option("", "--key", "-k", help="Only this key's records."),
    action: str = typer.Option("", "--action", help="Only this action (request.authorized, request.denied, "
                               "request.completed, key.create, key.rotate, key.revoke, ...)."),
    after: int = typer.Option(0, "--after", min=0, help="Records after this sequence number (paging)."),
    limit: int = typer.Option(100, "--limit", min=1, max=1000, help="At most this many records."),
    auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR,
) -> None:
    """A tenant's audit records, oldest first (metadata only: never prompts, completions or secrets)."""
    def body():
        conn = connect(auth, token, data_dir)
        tenant_id = _tenant_id(conn, tenant)
        page = conn.call("ListAuditEvents", auth_pb2.ListAuditEventsRequest(
            tenant_id=tenant_id, after_seq=after, limit=limit, key_id=key, action=action))
        console.print(audit_table(page.events, f"Audit trail of {tenant_id}"))
        more = f"; more with --after {page.next_after_seq}" if page.next_after_seq else ""
        console.print(f"{_count(len(page.events), 'record')}{more}")
    run(body)


@audit_app.command("verify")
def audit_verify(auth: str = AUTH, token: str = TOKEN, data_dir: Path = DATA_DIR) -> None:
    """Recompute the whole hash chain: exit code 0 when it is intact, 1 when a record was edited, deleted or
    inserted (the first bad record is named)."""
    def body():
        report = connect(auth, token, data_dir).call("VerifyAuditChain", auth_pb2.VerifyAuditChainRequest(),
                                                     timeout=VERIFY_TIMEOUT)
        if report.ok:
            console.print(f"[green]audit chain intact[/]: {report.events_checked} records checked")
            return
        errors.print(f"[red]audit chain BROKEN at record {report.first_bad_seq}[/]: {escape(report.message)} "
                     f"({report.events_checked} records verified before it)", soft_wrap=True)
        raise typer.Exit(1)
    run(body)
