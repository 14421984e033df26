"""The `llmaas` command line."""

from __future__ import annotations

import datetime as dt
import signal
import time
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from llmaas.catalog import lifecycle as lc
from llmaas.catalog.entries import CatalogError, load_catalog
from llmaas.cli.admin import audit_app, keys_app, tenants_app
from llmaas.cli.guard import guard_app
from llmaas.cli.status import status as status_command
from llmaas.cli.usage import usage_app
from llmaas.common.telemetry import DEFAULT_TRACE_SAMPLING, LOG_LEVELS
from llmaas.stack.paths import DEFAULT_CATALOG, DEFAULT_MODEL_REPOSITORY, REFERENCE_CATALOG
from llmaas.stack.ports import TRITON_MAX_REPLICAS, StackPorts
from llmaas.stack.supervisor import RestartError, Running, StartError, Supervisor
from llmaas.stack.up import STACK_FILE, PortTaken, StackOptions, refuse_taken_ports, start_stack, update_stack_pids

app = typer.Typer(help="llmaas: a self-hostable, OpenAI-compatible LLM platform.", no_args_is_help=True)
console = Console()
app.add_typer(guard_app, name="guard")
app.add_typer(tenants_app, name="tenants")
app.add_typer(keys_app, name="keys")
app.add_typer(audit_app, name="audit")
app.add_typer(usage_app, name="usage")
app.command("status")(status_command)


@app.callback()
def _root() -> None:
    """llmaas: a self-hostable, OpenAI-compatible LLM platform."""


# How often `llmaas up` looks for dead children once the stack is up (restarts are due at back-off precision).
WATCH_INTERVAL = 0.2


def _report(component: str, event: str, seconds: float) -> None:
    if event.startswith("exited"):  # 'exited (signal SIGKILL), restart in 0.5s': shown after the component's name
        console.print(f"  [red]{'exited':>8}[/] {component}{escape(event.removeprefix('exited'))}", soft_wrap=True)
        return
    styles = {"starting": "yellow", "healthy": "green", "stopping": "yellow", "stopped": "dim"}
    timing = f" in {seconds:.1f}s" if event in ("healthy", "stopped") else ""
    console.print(f"  [{styles.get(event, 'white')}]{event:>8}[/] {component}{timing}")


def _giving_up(failing: Running, supervisor: Supervisor) -> str:
    policy = supervisor.policy
    return (f"[red]{failing.component.name} exited more than {policy.max_restarts} times within "
            f"{policy.window:.0f} s[/]; stopping the stack; see {escape(str(failing.log_path))}")


class _Terminate(Exception):
    pass


def _on_sigterm(signum, frame):
    raise _Terminate()


@app.command()
def up(
    data_dir: Path = typer.Option(Path(".llmaas"), help="State (SQLite files, logs, stack.json) lives here."),
    base_port: int = typer.Option(8080, help=f"Envoy listens here; every other component on the next "
                                  f"{StackPorts.SPAN - 1} ports."),
    model_repository: list[Path] = typer.Option([DEFAULT_MODEL_REPOSITORY], help="Triton model repository "
                                                "(repeatable)."),
    catalog: list[Path] = typer.Option([DEFAULT_CATALOG, REFERENCE_CATALOG], help="Model catalogue file (repeatable)."),
    jaeger: bool = typer.Option(True, help="Run Jaeger for traces when its binary is installed."),
    guard_mode: str = typer.Option("enforce", help="Prompt guard mode: enforce, shadow or off."),
    guard_classifier: str = typer.Option("local", help="The guard's learned layer: local (in the guard) or triton "
                                         "(Triton serves deploy/triton/guard_repository/llmaas-guard)."),
    auth_replicas: int = typer.Option(2, min=1, max=3, help="Auth service replicas (one database, Envoy balances)."),
    ext_authz: str = typer.Option("http", help="How Envoy asks auth to check each request: http (cheaper) or grpc."),
    triton_replicas: int = typer.Option(1, min=1, max=TRITON_MAX_REPLICAS, help="tritonserver processes on the same "
                                        "model repositories (the catalog's pool local-cpu)."),
    trace_sampling: float = typer.Option(DEFAULT_TRACE_SAMPLING, min=0.0, max=1.0, envvar="LLMAAS_TRACE_SAMPLING",
                                         help="Share of requests traced end to end, decided by Envoy (0 to 1); a "
                                         "request with an x-client-trace-id header is always traced."),
    grpc_reflection: bool = typer.Option(False, help="Serve gRPC reflection on the services' ports (it lists "
                                         "every service and message, internal ones included)."),
    tls_cert: Path | None = typer.Option(None, help="Serve this certificate (PEM chain, server first) instead of "
                                         "the one generated in the data directory; with --tls-key."),
    tls_key: Path | None = typer.Option(None, help="The private key of --tls-cert (PEM, unencrypted)."),
    tls_ca: Path | None = typer.Option(None, help="The CA clients should trust for --tls-cert (stack.json's "
                                       "ca_file); omit when a CA the system trusts issued it."),
    log_level: str = typer.Option("info", help="The services' log level (JSON lines in the data directory's logs): "
                                  "debug, info, warning or error."),
    insecure_http: bool = typer.Option(False, "--insecure-http", help="Serve plain HTTP instead of HTTPS: API keys "
                                       "and prompts cross the network in clear. For a trusted loopback only."),
) -> None:
    """Start the whole local stack in the foreground; Ctrl-C stops it."""
    if log_level.lower() not in LOG_LEVELS:
        raise typer.BadParameter("must be debug, info, warning or error", param_hint="--log-level")
    if ext_authz not in ("http", "grpc"):
        raise typer.BadParameter("must be http or grpc", param_hint="--ext-authz")
    if guard_classifier not in ("local", "triton"):
        raise typer.BadParameter("must be local or triton", param_hint="--guard-classifier")
    if insecure_http and (tls_cert or tls_key or tls_ca):
        raise typer.BadParameter("plain HTTP serves no certificate", param_hint="--insecure-http")
    if (tls_cert is None) != (tls_key is None) or (tls_ca is not None and tls_cert is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together (--tls-ca with them)", param_hint="--tls-cert")
    options = StackOptions(data_dir=data_dir, base_port=base_port, model_repositories=list(model_repository),
                           catalog_files=list(catalog), jaeger=jaeger, guard_mode=guard_mode,
                           guard_classifier=guard_classifier,
                           auth_replicas=auth_replicas, triton_replicas=triton_replicas, ext_authz=ext_authz,
                           trace_sampling=trace_sampling, grpc_reflection=grpc_reflection,
                           tls_cert_file=tls_cert, tls_key_file=tls_key,
                           tls_ca_file=tls_ca, insecure_http=insecure_http, log_level=log_level.lower())
    try:
        refuse_taken_ports(options)
    except PortTaken as e:  # before anything starts or stack.json is touched: they may be the other stack's
        console.print(f"[red]llmaas up:[/] {escape(str(e))}", soft_wrap=True)
        raise typer.Exit(1) from None
    signal.signal(signal.SIGTERM, _on_sigterm)
    # Each restart rewrites stack.json's pids, so that whoever reads it signals the live process.
    supervisor = Supervisor(data_dir, on_event=_report,
                            on_restart=lambda _: update_stack_pids(data_dir, supervisor.pids()))
    console.print(f"[bold]llmaas[/] starting the local stack (data in {data_dir.resolve()})")
    code = 0
    try:
        t0 = time.monotonic()
        stack = start_stack(options, supervisor)
        console.print(f"\n[bold green]All components healthy[/] in {time.monotonic() - t0:.1f}s")
        console.print(f"  REST base URL  [bold]{stack['base_url']}[/]")
        console.print(f"  Admin URL      {stack['admin_url']}")
        _print_edge_security(stack)
        console.print(f"  API key        [bold]{stack['api_key']}[/]", soft_wrap=True)
        if stack["jaeger_query"]:
            console.print(f"  Traces         {stack['jaeger_query']} (Jaeger query API), "
                          f"{stack['trace_sampling']:.2%} of requests sampled")
        console.print("  Metrics        " + ", ".join(f"{name} {url}" for name, url in stack["metrics"].items()),
                      soft_wrap=True)
        console.print(f"  Stack file     {data_dir.resolve() / STACK_FILE}")
        console.print("Press Ctrl-C to stop.")
        while (failing := supervisor.restart_exited()) is None:
            time.sleep(WATCH_INTERVAL)
        console.print(_giving_up(failing, supervisor), soft_wrap=True)
        code = 1
    except StartError as e:
        console.print(f"[red]start failed:[/] {escape(str(e))}")
        code = 1
    except RestartError as e:
        console.print(f"[red]{escape(str(e))}[/]; stopping the stack", soft_wrap=True)
        code = 1
    except (KeyboardInterrupt, _Terminate):
        console.print("\nstopping")
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not interrupt the clean stop
        supervisor.stop_all()
        (data_dir / STACK_FILE).unlink(missing_ok=True)
    raise typer.Exit(code)


def _print_edge_security(stack: dict) -> None:
    if stack["edge_tls"] is None:
        console.print("  [bold red]PLAIN HTTP (--insecure-http): API keys, prompts and completions cross the "
                      "network unencrypted[/]", soft_wrap=True)
        return
    origin = {"created": " (new CA: clients must trust it)", "renewed": " (renewed)"}.get(stack["edge_tls"]["origin"],
                                                                                         "")
    trust = stack["ca_file"] or "the system's CAs"
    console.print(f"  TLS 1.3        clients verify with [bold]{escape(trust)}[/]{origin}", soft_wrap=True)


_PHASE_STYLE = {"production": "green", "notice": "yellow", "end_of_support": "red", "removed": "dim"}


@app.command()
def lifecycle(
    date: str = typer.Option("", help="Compute phases for this day (YYYY-MM-DD); today by default."),
    catalog: list[Path] = typer.Option([DEFAULT_CATALOG, REFERENCE_CATALOG], help="Catalogue file (repeatable)."),
    phase: list[str] = typer.Option([], help="Only these phases (repeatable): production, notice, end_of_support, "
                                             "removed."),
) -> None:
    """The model lifecycle: phase, production and end-of-support dates, LTS, notice, recommended migration."""
    try:
        day = dt.date.fromisoformat(date) if date else dt.date.today()
        entries = load_catalog(list(catalog))
    except (ValueError, CatalogError) as e:
        console.print(f"[red]{e}[/]")
        raise typer.Exit(2) from None
    table = Table(title=f"Model lifecycle on {day.isoformat()}")
    for column in ("model", "editor", "phase", "production", "end of support", "LTS", "notice from", "migrate to"):
        table.add_column(column)
    shown = 0
    for entry in entries.models:
        st = lc.status(entry, entries, day)
        if phase and st.phase not in phase:
            continue
        shown += 1
        table.add_row(entry.id, entry.editor, f"[{_PHASE_STYLE.get(st.phase, 'white')}]{st.phase}[/]",
                      entry.production_date.isoformat(), str(st.end_of_support or ""), "yes" if st.lts else "",
                      str(st.notice_start or ""), st.successor or "")
    console.print(table)
    console.print(f"{shown} models")


def main() -> None:
    app()
