"""`llmaas guard ...`: build the local guard model, check one text, evaluate the guard on a labelled JSONL file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from llmaas.stack.paths import DEPLOY_DIR

if TYPE_CHECKING:
    from llmaas.guard.evaluation import Confusion, Report

# The guard's modules (scikit-learn, numpy) are imported by the commands that need them: every other `llmaas`
# command starts without paying for them.
DEFAULT_MODEL_DIR = DEPLOY_DIR / "guard" / "model"  # = llmaas.guard.training.train.DEFAULT_MODEL_DIR

guard_app = typer.Typer(help="The prompt security guard: training and evaluation.", no_args_is_help=True)
console = Console()


@guard_app.command()
def train(
    model_dir: Path = typer.Option(DEFAULT_MODEL_DIR, help="Where the model and its train/test splits are written."),
    data_dir: Path = typer.Option(None, help="The shared guard data (default: deploy/guard/data/public)."),
    leave_one_source_out: bool = typer.Option(False, "--leave-one-source-out",
                                              help="Also train once without each source and test on it (slow)."),
) -> None:
    """Train the local classifier from the guard data (reproducible: same data, same model)."""
    from llmaas.guard.training.corpus import shared_data_dir
    from llmaas.guard.training.train import train as build

    source = data_dir or shared_data_dir()
    if not source.is_dir():
        console.print(f"[red]no guard data in {source}[/]")
        raise typer.Exit(2)
    model = build(model_dir, source)
    console.print(f"model written to {model_dir} ({model.meta['train_samples']} training samples, "
                  f"digest {model.meta['train_digest']}); test split: {model_dir / 'test.jsonl'}")
    if leave_one_source_out:
        _print_generalization(source, 0.5)


def _print_generalization(data_dir: Path | None, threshold: float) -> None:
    from llmaas.guard.training.generalization import leave_one_source_out

    result = leave_one_source_out(data_dir, threshold=threshold, progress=lambda m: console.print(f"[dim]{m}[/]"))
    table = Table(title="Leave one source out (trained without the source, tested on all of it)")
    for column in ("held-out source", "attacks", "recall", "benign", "FP rate", "TP", "FN", "FP", "TN"):
        table.add_column(column, justify="left" if column == "held-out source" else "right")
    for h in result.held_out:
        table.add_row(*_row(h.source, h.report.overall))
    table.add_row(*_row("all (pooled)", result.pooled()))
    console.print(table)
    console.print(_table("Leave one source out, pooled by language", result.pooled_by("language")))
    console.print(_table("Leave one source out, pooled by kind", result.pooled_by("kind")))
    console.print(_table("Leave one source out, pooled by kind and language", result.pooled_by("kind and language")))


def _pct(value: float | None) -> str:
    return "" if value is None else f"{100 * value:.1f}%"


def _row(name: str, c: Confusion) -> list[str]:
    return [name, str(c.attacks), _pct(c.recall), str(c.benign), _pct(c.fp_rate), str(c.tp), str(c.fn), str(c.fp),
            str(c.tn)]


def _table(title: str, rows: dict[str, Confusion]) -> Table:
    table = Table(title=title)
    for column in (title.split()[-1], "attacks", "recall", "benign", "FP rate", "TP", "FN", "FP", "TN"):
        table.add_column(column, justify="left" if column == title.split()[-1] else "right")
    for name in sorted(rows):
        table.add_row(*_row(name, rows[name]))
    return table


def print_report(report: Report) -> None:
    overall = Table(title="Guard evaluation")
    for column in ("rows", "attacks", "recall", "benign", "FP rate", "TP", "FN", "FP", "TN"):
        overall.add_column(column, justify="right")
    c = report.overall
    overall.add_row(str(c.attacks + c.benign), *_row("", c)[1:])
    console.print(overall)
    for dimension in ("source", "language", "category", "kind"):
        console.print(_table(f"By {dimension}", report.by[dimension]))
    if report.everyday:
        print_everyday(report)
    if report.third_party:
        print_third_party(report)
    latency = Table(title=f"Latency per text (ms, {len(report.latencies_ms)} texts)")
    for column in ("p50", "p90", "p99", "max"):
        latency.add_column(column, justify="right")
    latency.add_row(*(f"{report.percentile(p):.2f}" for p in (50, 90, 99)), f"{max(report.latencies_ms or [0]):.2f}")
    console.print(latency)


def print_everyday(report: Report) -> None:
    """Issue 21's table: the everyday prompts' false positives per language, next to the recall on that language's
    attacks in the same file, and the mean score of the same requests translated."""
    means = report.translated_means()
    table = Table(title="Everyday prompts (held back): false positives per language, next to recall")
    for column in ("language", "everyday", "FP", "FP rate", "mean score (translated)", "attacks", "recall"):
        table.add_column(column, justify="left" if column == "language" else "right")
    for lang in sorted(report.everyday):
        c, attacks = report.everyday[lang], report.by["language"].get(lang)
        table.add_row(lang, str(c.benign), str(c.fp), _pct(c.fp_rate), f"{means[lang]:.3f}" if lang in means else "",
                      str(attacks.attacks) if attacks else "0", _pct(attacks.recall) if attacks else "")
    total = report.everyday_overall
    table.add_row("all", str(total.benign), str(total.fp), _pct(total.fp_rate), "", str(report.overall.attacks),
                  _pct(report.overall.recall))
    console.print(table)


def print_third_party(report: Report) -> None:
    """Ordinary third-party text checked as documents (issues 15 and 21): its false positives per language, next to
    the recall on the documents with an injected instruction in the same file."""
    table = Table(title="Ordinary third-party text (held back, as documents): false positives per language, "
                        "next to document-attack recall")
    for column in ("language", "pieces", "FP", "FP rate", "document attacks", "recall"):
        table.add_column(column, justify="left" if column == "language" else "right")
    attacks = report.documents
    for lang in sorted(report.third_party):
        c = report.third_party[lang]
        table.add_row(lang, str(c.benign), str(c.fp), _pct(c.fp_rate), "", "")
    total = report.third_party_overall
    table.add_row("all", str(total.benign), str(total.fp), _pct(total.fp_rate), str(attacks.attacks),
                  _pct(attacks.recall))
    console.print(table)


def _classifier(model_dir: Path, rules_only: bool):
    from llmaas.guard.classifier import LocalClassifier, NoClassifier

    if rules_only:
        return NoClassifier()
    if (model_dir / "model.json").exists():
        return LocalClassifier.load(model_dir)
    console.print(f"[red]no model in {model_dir}[/]: run `llmaas guard train` (or pass --rules-only)")
    raise typer.Exit(2)


@guard_app.command()
def check(
    text: str = typer.Argument(..., help="The text to check."),
    document: bool = typer.Option(False, help="Check it as a tool result or document, not a user prompt."),
    model_dir: Path = typer.Option(DEFAULT_MODEL_DIR, help="The local model (`llmaas guard train`)."),
    rules_only: bool = typer.Option(False, help="Leave the learned layer out."),
) -> None:
    """The verdict on one text: score and findings (layer, reason, score)."""
    from llmaas.guard.verdict import DOCUMENT, PROMPT, Detector

    verdict = Detector(_classifier(model_dir, rules_only)).part(text, DOCUMENT if document else PROMPT)
    table = Table(title=f"score {verdict.score:.3f}")
    for column in ("layer", "reason", "score"):
        table.add_column(column)
    for f in sorted(verdict.findings, key=lambda f: -f.score):
        table.add_row(f.layer, f.reason, f"{f.score:.3f}")
    console.print(table)


@guard_app.command("eval")
def eval_(
    file: Path = typer.Argument(None, help="JSONL with `text` and `label` (1 = attack); optional source, lang, "
                                           "category, kind (prompt or document). Default: the model's test.jsonl."),
    model_dir: Path = typer.Option(DEFAULT_MODEL_DIR, help="The local model (`llmaas guard train`)."),
    threshold: float = typer.Option(0.5, help="Flag from this score."),
    rules_only: bool = typer.Option(False, help="Leave the learned layer out."),
    leave_one_source_out: bool = typer.Option(False, "--leave-one-source-out",
                                              help="Also train once without each source of the guard data and test "
                                                   "on it: the honest number for attacks unlike the training data "
                                                   "(one training per source, minutes)."),
    data_dir: Path = typer.Option(None, help="The shared guard data, for --leave-one-source-out."),
) -> None:
    """Recall, false positives and confusion per source, language and category, the everyday prompts' false
    positives per language (issue 21), and latency; with --leave-one-source-out, the generalization table."""
    from llmaas.guard.evaluation import evaluate
    from llmaas.guard.training.corpus import read_jsonl
    from llmaas.guard.verdict import Detector

    file = file or model_dir / "test.jsonl"
    if not file.exists():
        console.print(f"[red]no {file}[/]: run `llmaas guard train` or name a file")
        raise typer.Exit(2)
    print_report(evaluate(read_jsonl(file), Detector(_classifier(model_dir, rules_only)), threshold))
    if leave_one_source_out:
        _print_generalization(data_dir, threshold)


@guard_app.command()
def refusals(
    tenant: str = typer.Argument(..., help="Tenant id (ten_...)."),
    limit: int = typer.Option(50, help="At most this many, newest first (1-500)."),
    guard: str = typer.Option(None, "--guard", envvar="LLMAAS_GUARD_ADDR", show_default=False, metavar="HOST:PORT",
                              help="Guard service gRPC address. Default: the running stack's, from its stack.json."),
    token: str = typer.Option(None, "--token", envvar="LLMAAS_ADMIN_TOKEN", show_default=False,
                              help="Platform admin token. Default: the running stack's, from its stack.json."),
    data_dir: Path = typer.Option(Path(".llmaas"), "--data-dir", help="Data directory of the running `llmaas up`."),
) -> None:
    """A tenant's recent refusals and shadow flags: time, request id, decision, score, threshold, reasons (never the
    prompt). Tenant admins read the same over REST: GET /admin/v1/tenants/{t}/guard-refusals."""
    import json

    import grpc

    from llmaas.common.errors import from_rpc_error
    from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc
    from llmaas.stack.up import STACK_FILE

    if not (guard and token):
        try:
            stack = json.loads((data_dir / STACK_FILE).read_text())
        except (OSError, ValueError) as e:
            console.print(f"[red]error:[/] no running stack in {data_dir} ({e}); pass --guard and --token")
            raise typer.Exit(1) from None
        guard, token = guard or stack["services"]["guard"], token or stack["admin_token"]
    with grpc.insecure_channel(guard) as channel:
        try:
            found = guard_pb2_grpc.GuardServiceStub(channel).ListGuardRefusals(
                guard_pb2.ListGuardRefusalsRequest(tenant_id=tenant, limit=limit),
                metadata=(("authorization", f"Bearer {token}"),), timeout=15)
        except grpc.RpcError as err:
            console.print(f"[red]error:[/] {from_rpc_error(err, service='guard').message}")
            raise typer.Exit(1) from None
    table = Table(title=f"Guard refusals of {tenant} (newest first)")
    for column in ("time (UTC)", "request id", "decision", "score", "threshold", "reasons"):
        table.add_column(column)
    for r in found.refusals:
        table.add_row(r.created_at.ToDatetime().strftime("%Y-%m-%d %H:%M:%S"), r.request_id, r.decision,
                      f"{r.score:.3f}", f"{r.threshold:.2f}", ", ".join(r.reasons))
    console.print(table)
