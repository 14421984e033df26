"""`llmaas usage ...`: consumption, tiers and prices, from the admin REST API (/admin/v1) through the gateway.

Where to connect: --admin-url and --token, else $LLMAAS_ADMIN_URL and $LLMAAS_ADMIN_TOKEN, else the stack file of a
local `llmaas up` (--data-dir, default .llmaas). HTTPS verified against $LLMAAS_CA_FILE, else the stack file's
`ca_file` when the stack file is read, else the system's CAs. Standard library HTTP only.
"""

from __future__ import annotations

import json
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from llmaas.stack.up import STACK_FILE

usage_app = typer.Typer(help="Consumption (tokens, cost, energy), tiers and prices.", no_args_is_help=True)
# Piped output (scripts, logs) gets wide tables instead of rich's 80-column default, which squeezes them unreadable.
console = Console(width=None if Console().is_terminal else 200)

GROUPS = ("key", "model", "day", "month", "kind")
_GROUP_FIELD = {"key": "key_id", "model": "model", "day": "day", "month": "month", "kind": "kind"}


@dataclass(frozen=True)
class Admin:
    url: str
    token: str
    ca_file: str = ""  # the CA that issued the gateway's certificate; "": the system's CAs

    def call(self, method: str, path: str, query: list[tuple[str, str]] | None = None, body: dict | None = None):
        url = self.url.rstrip("/") + path + ("?" + urllib.parse.urlencode(query) if query else "")
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})
        try:
            context = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else None
            with urllib.request.urlopen(req, timeout=30, context=context) as resp:
                return json.loads(resp.read() or b"{}")
        except urllib.error.HTTPError as e:
            try:
                message = json.loads(e.read())["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = e.reason
            console.print(f"[red]{e.code}[/] {message}")
            raise typer.Exit(1) from None
        except urllib.error.URLError as e:
            console.print(f"[red]cannot reach {self.url}:[/] {e.reason}")
            raise typer.Exit(1) from None


def _admin(admin_url: str, token: str, data_dir: Path) -> Admin:
    url = admin_url or os.environ.get("LLMAAS_ADMIN_URL", "")
    tok = token or os.environ.get("LLMAAS_ADMIN_TOKEN", "")
    ca = os.environ.get("LLMAAS_CA_FILE", "")
    if not (url and tok):
        stack_file = data_dir / STACK_FILE
        if not stack_file.exists():
            console.print(f"[red]no admin URL/token given and no running stack in {data_dir}[/]")
            raise typer.Exit(2)
        stack = json.loads(stack_file.read_text())
        url, tok = url or stack["admin_url"], tok or stack["admin_token"]
        ca = ca or stack.get("ca_file") or ""
    return Admin(url, tok, ca)


def _tenant(admin: Admin, tenant: str) -> str:
    """A tenant id (ten_...) as given, or the id of the tenant with that name (asked of auth's admin API)."""
    if tenant.startswith("ten_"):
        return tenant
    ids = [t["tenant_id"] for t in admin.call("GET", "/tenants").get("tenants", []) if t.get("name") == tenant]
    if not ids:
        console.print(f"[red]no tenant named {tenant!r}[/]")
        raise typer.Exit(1)
    return ids[0]


_URL = typer.Option("", "--admin-url", help="e.g. https://127.0.0.1:8080/admin/v1 ($LLMAAS_ADMIN_URL).")
_TOKEN = typer.Option("", "--token", help="Admin token, or a tenant admin's key ($LLMAAS_ADMIN_TOKEN).")
_DATA = typer.Option(Path(".llmaas"), "--data-dir", help="A local stack's data directory (for its stack file).")


def _n(value) -> str:
    return f"{int(value or 0):,}"


@usage_app.command("show")
def show(
    tenant: str = typer.Argument(..., help="The tenant: its id (ten_...) or name."),
    by: list[str] = typer.Option([], "--by", help=f"Group by (repeatable): {', '.join(GROUPS)}."),
    key: str = typer.Option("", help="Only this API key id."),
    model: str = typer.Option("", help="Only this model."),
    start: str = typer.Option("", "--from", help="First UTC day, YYYY-MM-DD."),
    end: str = typer.Option("", "--to", help="Last UTC day, YYYY-MM-DD (inclusive)."),
    as_json: bool = typer.Option(False, "--json", help="The API's JSON instead of a table."),
    admin_url: str = _URL, token: str = _TOKEN, data_dir: Path = _DATA,
) -> None:
    """A tenant's settled usage: requests served, failed, cancelled (by their client) and expired (never settled),
    tokens by type, cost (exact, EUR) and estimated energy (kWh). Tokens and cost include the work done for requests
    that did not complete."""
    if bad := [g for g in by if g not in GROUPS]:
        console.print(f"[red]--by {bad[0]}: not one of {', '.join(GROUPS)}[/]")
        raise typer.Exit(2)
    query = [("group_by", g) for g in by] + [(k, v) for k, v in (("key_id", key), ("model", model),
                                                                  ("start_day", start), ("end_day", end)) if v]
    admin = _admin(admin_url, token, data_dir)
    tenant_id = _tenant(admin, tenant)
    data = admin.call("GET", f"/tenants/{urllib.parse.quote(tenant_id)}/usage", query)
    if as_json:
        console.print_json(json.dumps(data))
        return
    period = f" from {start or 'the start'} to {end or 'today'}"
    table = Table(title=f"Usage of tenant {tenant_id}{period}" + (f", key {key}" if key else "")
                  + (f", model {model}" if model else ""))
    for g in by:
        table.add_column(g)
    for column in ("requests", "failed", "cancelled", "expired", "prompt", "completion", "reasoning", "total tokens", f"cost ({data.get('currency')})",
                   "energy (kWh)"):
        table.add_column(column, justify="right")

    def cells(row: dict) -> list[str]:
        return [_n(row.get("requests")), _n(row.get("failed_requests")), _n(row.get("cancelled_requests")),
                _n(row.get("expired_requests")), _n(row.get("prompt_tokens")), _n(row.get("completion_tokens")),
                _n(row.get("reasoning_tokens")), _n(row.get("total_tokens")), row.get("cost_eur", "0"),
                row.get("energy_kwh", "0")]

    for row in data.get("rows", []):
        table.add_row(*[row.get(_GROUP_FIELD[g], "") for g in by], *cells(row))
    total = data.get("total", {})
    table.add_row(*(["[bold]total[/]"] + [""] * (len(by) - 1) if by else []), *[f"[bold]{c}[/]" for c in cells(total)])
    console.print(table)


def _tier_row(t: dict) -> list[str]:
    def eur(v):
        return "unlimited" if v is None else f"{float(v):,.2f} €"

    def count(v):
        return "unlimited" if v is None else _n(v)

    return [t.get("id", ""), t.get("name", ""), "n/a" if t.get("purchase_credit_eur") is None
            else eur(t["purchase_credit_eur"]), eur(t.get("monthly_budget_eur")),
            count(t.get("output_tokens_per_hour")), count(t.get("output_tokens_per_day")),
            count(t.get("requests_per_minute"))]


_TIER_COLUMNS = ("tier", "name", "purchase credit", "monthly budget", "output tokens/hour", "output tokens/day",
                 "requests/minute")


@usage_app.command("tiers")
def tiers(admin_url: str = _URL, token: str = _TOKEN, data_dir: Path = _DATA) -> None:
    """The tiers: purchase credit, monthly budget, output tokens per hour and per day."""
    data = _admin(admin_url, token, data_dir).call("GET", "/tiers")
    table = Table(title=f"Tiers (default: {data.get('default_tier')})")
    for column in _TIER_COLUMNS:
        table.add_column(column, justify="left" if column in ("tier", "name") else "right")
    for t in data.get("tiers", []):
        table.add_row(*_tier_row(t))
    console.print(table)


@usage_app.command("tier")
def tier(
    tenant: str = typer.Argument(..., help="The tenant: its id (ten_...) or name."),
    set_tier: str = typer.Option("", "--set", help="Assign this tier (platform admin)."),
    budget: str = typer.Option("", "--budget", help="With --set: a monthly budget of its own, in EUR."),
    admin_url: str = _URL, token: str = _TOKEN, data_dir: Path = _DATA,
) -> None:
    """A tenant's tier and this month's spend; --set assigns another."""
    admin = _admin(admin_url, token, data_dir)
    tenant_id = _tenant(admin, tenant)
    path = f"/tenants/{urllib.parse.quote(tenant_id)}/tier"
    if set_tier:
        body = {"tier": set_tier, **({"monthly_budget_eur": budget} if budget else {})}
        admin.call("PUT", path, body=body)
    data = admin.call("GET", path)
    table = Table(title=f"Tier of tenant {tenant_id}" + ("" if data.get("assigned") else " (default)"))
    for column in (*_TIER_COLUMNS, "spent this month", "incl. in flight"):
        table.add_column(column, justify="left" if column in ("tier", "name") else "right")
    table.add_row(*_tier_row(data.get("tier", {})), data.get("month_spent_eur", "0"),
                  data.get("month_charged_eur", "0"))
    console.print(table)


@usage_app.command("prices")
def prices(admin_url: str = _URL, token: str = _TOKEN, data_dir: Path = _DATA) -> None:
    """The price table with its effective dates (EUR per million tokens; audio per started minute)."""
    data = _admin(admin_url, token, data_dir).call("GET", "/prices")
    table = Table(title=f"Prices ({data.get('currency')} per million tokens)")
    fields = ("input", "output", "reasoning", "rerank", "batch_input", "batch_output", "audio_minute")
    table.add_column("effective from")
    for f in fields:
        table.add_column(f.replace("_", " ") + (" (per min)" if f == "audio_minute" else ""), justify="right")
    for p in data.get("prices", []):
        table.add_row(p.get("effective_from", ""), *[p.get(f, "0") for f in fields])
    console.print(table)
