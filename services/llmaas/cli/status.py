"""`llmaas status`: the public status (GET /v1/status, no key) as a table.

Where to connect: --url, else $LLMAAS_BASE_URL, else the stack file of a local `llmaas up` (--data-dir, default
.llmaas). HTTPS verified against $LLMAAS_CA_FILE, else the stack file's `ca_file`, else the system's CAs.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import ssl
import urllib.error
import urllib.request
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from llmaas.stack.up import STACK_FILE

console = Console(width=None if Console().is_terminal else 200)
_STYLE = {"operational": "green", "degraded": "yellow", "outage": "red"}


def _where(url: str, data_dir: Path) -> tuple[str, str]:
    """(the API's base URL ending in /v1, the CA file or "")."""
    url = url or os.environ.get("LLMAAS_BASE_URL", "")
    ca_file = os.environ.get("LLMAAS_CA_FILE", "")
    if url:
        return url.rstrip("/"), ca_file
    try:
        stack = json.loads((data_dir / STACK_FILE).read_text())
    except FileNotFoundError:
        console.print(f"[red]no running stack in {data_dir}[/] ({STACK_FILE} not found): give --url or start one "
                      f"with `llmaas up`")
        raise typer.Exit(1) from None
    return stack["base_url"].rstrip("/"), ca_file or stack.get("ca_file") or ""


def fetch_status(base_url: str, ca_file: str = "") -> dict:
    context = ssl.create_default_context(cafile=ca_file) if ca_file else None
    with urllib.request.urlopen(base_url.removesuffix("/v1") + "/v1/status", timeout=10, context=context) as resp:
        return json.loads(resp.read())


def _percent(model: dict, field: str) -> str:
    return f"{model[field] * 100:.2f}%" if field in model else "-"


def _incidents(model: dict) -> str:
    parts = []
    for incident in model.get("incidents", []):
        since = dt.datetime.fromtimestamp(incident.get("since", 0), dt.UTC).strftime("%H:%M:%S")
        where = f" on replica {incident['replica']}" if incident.get("replica") else ""
        parts.append(f"{incident['kind']}{where} since {since} UTC")
    return "; ".join(parts)


def render(status: dict) -> Table:
    updated = dt.datetime.fromtimestamp(status.get("updated_at", 0), dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")
    overall = status.get("status", "operational")
    table = Table(title=f"[{_STYLE.get(overall, 'white')}]{overall}[/] at {updated} (traffic as seen by "
                        f"{status.get('source', 'the router')})")
    for column in ("model", "status", "replicas", "avail. 1h", "avail. 24h", "success 1h", "requests 1h",
                   "TTFT p50 (5m)", "tokens/s p50 (5m)", "incidents"):
        table.add_column(column)
    for model in status.get("data", []):
        state = model.get("status", "")
        table.add_row(
            model["id"], f"[{_STYLE.get(state, 'white')}]{state}[/]",
            f"{model.get('replicas_serving', 0)}/{model.get('replicas', 0)}",
            _percent(model, "availability_1h"), _percent(model, "availability_24h"),
            _percent(model, "success_rate_1h"), str(model.get("requests_1h", 0)),
            f"{model['ttft_p50_ms']:.0f} ms" if "ttft_p50_ms" in model else "-",
            f"{model['tokens_per_second_p50']:.1f}" if "tokens_per_second_p50" in model else "-",
            _incidents(model))
    return table


def status(
    url: str = typer.Option("", help="The API's base URL (…/v1). Default: $LLMAAS_BASE_URL, else the local stack's."),
    data_dir: Path = typer.Option(Path(".llmaas"), help="The local stack's data directory (its stack.json)."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON."),
) -> None:
    """The platform's public status: each model's availability, time to first token, output rate and incidents."""
    base_url, ca_file = _where(url, data_dir)
    try:
        answer = fetch_status(base_url, ca_file)
    except urllib.error.HTTPError as e:
        console.print(f"[red]{e.code}[/] {e.reason}")
        raise typer.Exit(1) from None
    except urllib.error.URLError as e:
        console.print(f"[red]cannot reach {base_url}:[/] {e.reason}")
        raise typer.Exit(1) from None
    if as_json:
        console.print_json(json.dumps(answer))
        return
    console.print(render(answer))
