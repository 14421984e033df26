"""What the request path costs: the same chat request through Envoy and the services, straight to Triton's own HTTP
generate endpoint with the same rendered prompt (the issue's baseline: one response per request), and to Triton the
way the router asks (gRPC ModelStreamInfer, one response per token: what Triton itself costs on the platform's path),
interleaved in one run and repeated (median [min-max]).

    .venv/bin/python -m bench.request_path [--seconds 10] [--repeat 3] [--soak 200000] [--baseline main]

`--baseline REV` also starts a second stack running that git revision's services (exported from this repository,
same model, same Triton), and measures it interleaved with the current code: the before/after of one run.

Reports, for both paths: latency p50/p99 at concurrency 1, requests/s at concurrency 32 (16-token completions), time
to first byte of a streamed completion (32 chunks) at concurrency 1; then the added latency, and CPU per request (and
per streamed token: streams of 32 tokens against streams of one, both at concurrency 32) of every process of the
stack, from /proc, with the bench's own CPU apart; RSS of every process
before and after (`--soak N` sends N more requests at concurrency 32 first, to show memory stays flat).

The guard enforces, with varied prompts (identical ones in a row trip its repetition rule, as in the reference);
tracing as `llmaas up` configures it by default (the sampling is printed). The deterministic test model answers, so
what is measured is the platform, not a model.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import os
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from llmaas.catalog.entries import load_catalog
from llmaas.router.params import Message
from llmaas.router.template import render_prompt
from llmaas.router.triton import TritonReplica
from llmaas.stack.ports import StackPorts
from prometheus_client.parser import text_string_to_metric_families

from bench import loadgen
from tests.support.stack import E2E_DIR, TEST_MODEL, live_pids, running_stack

HOST = "127.0.0.1"
# About 300 bytes of request, as in the measurement; the suffix varies the prompt.
PROMPT = ("Summarise the benefits of running language models on your own infrastructure for a company that must keep "
          "its data in its own country, in three short points for a board meeting. Variant {}.")
TICK = os.sysconf("SC_CLK_TCK")


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def _rss_mib(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except FileNotFoundError:
        pass
    return 0.0


def _process_tree(roots: dict[str, int]) -> dict[str, list[int]]:
    """Each component's process and its descendants (the guard's analysis worker, Triton's backend stubs)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    tree = {}
    for name, pid in roots.items():
        pids, todo = [], [pid]
        while todo:
            p = todo.pop()
            pids.append(p)
            todo += children.get(p, [])
        tree[name] = pids
    return tree


def _cpu_snapshot(tree: dict[str, list[int]]) -> dict[str, float]:
    snap = {name: sum(_cpu_seconds(p) for p in pids) for name, pids in tree.items()}
    times = os.times()
    snap["bench client"] = times.user + times.system
    return snap


def _group(name: str) -> str:
    """auth-2 and auth count as auth; triton-2 as triton."""
    return name.split("-")[0] if name.split("-")[-1].isdigit() else name


def unlimited_tier(stack: dict) -> None:
    """The tenant on the tier with no request or token limit: the bench measures cost, not the rate limiter."""
    r = httpx.put(f"{stack['admin_url']}/tenants/{stack['tenant_id']}/tier", json={"tier": "monthly"},
                  headers={"Authorization": f"Bearer {stack['admin_token']}"}, timeout=30)
    r.raise_for_status()


class Paths:
    def __init__(self, stack: dict, max_tokens: int) -> None:
        ports = StackPorts(stack["base_port"])
        self.envoy_port, self.triton_port = ports.envoy_http, ports.triton_http
        # The edge speaks TLS unless the stack runs with --insecure-http; Triton's own port is plain HTTP.
        self.envoy_tls = loadgen.client_tls(stack["ca_file"]) if stack["base_url"].startswith("https:") else None
        entry = load_catalog([E2E_DIR / "catalog.yaml"]).lookup(TEST_MODEL)
        self.triton_model = entry.triton_model
        self.auth = {"Authorization": f"Bearer {stack['api_key']}"}
        self.max_tokens = max_tokens
        self.variants = itertools.count()
        self.render = lambda text: render_prompt(entry.chat_template, (Message("user", text),), entry.bos_token,
                                                 entry.eos_token)

    def _text(self) -> str:
        return PROMPT.format(next(self.variants) % 97)

    def stack(self, stream: bool = False, max_tokens: int | None = None):
        def make() -> bytes:
            body = {"model": TEST_MODEL, "messages": [{"role": "user", "content": self._text()}],
                    "max_tokens": max_tokens or self.max_tokens}
            if stream:
                body["stream"] = True
            return loadgen.post(HOST, self.envoy_port, "/v1/chat/completions", body, self.auth)
        return self.envoy_port, make, self.envoy_tls

    def direct(self, stream: bool = False, max_tokens: int | None = None):
        path = f"/v2/models/{self.triton_model}/generate" + ("_stream" if stream else "")

        def make() -> bytes:
            body = {"text_input": self.render(self._text()), "stream": stream, "exclude_input_in_output": True,
                    "sampling_parameters": json.dumps({"max_tokens": max_tokens or self.max_tokens})}
            return loadgen.post(HOST, self.triton_port, path, body)
        return self.triton_port, make, None


def _median_range(values: list[float], fmt: str = "{:.2f}") -> str:
    return f"{fmt.format(statistics.median(values))} [{fmt.format(min(values))}-{fmt.format(max(values))}]"


def _pct(values: list[float], p: int) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[p - 1] * 1000


async def _run(port_make, concurrency: int, seconds: float, events: list[int] | None = None) -> loadgen.Result:
    """events: gets each streamed answer's count of SSE messages (the chunks the client received)."""
    if callable(port_make):  # an in-process path (the router's own Triton stream)
        return await _run_in_process(port_make, concurrency, seconds)
    port, make, tls = port_make

    def counted(status: int, body: bytes) -> str | None:
        if status != 200:
            return f"HTTP {status}: {body[:200]!r}"
        events.append(body.count(b"data: "))
        return None

    result = await loadgen.run(HOST, port, make, concurrency=concurrency, seconds=seconds, tls=tls,
                               check=counted if events is not None else None)
    if result.errors:
        print(f"  !! {result.errors} errors, last: {result.last_error}")
    return result


async def _run_in_process(send, concurrency: int, seconds: float) -> loadgen.Result:
    result = loadgen.Result()
    start = time.perf_counter()
    deadline = start + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            t0 = time.perf_counter()
            first = await send()
            result.latencies.append(time.perf_counter() - t0)
            result.first_bytes.append(first - t0)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    result.elapsed = time.perf_counter() - start
    return result


def triton_stream(stack: dict, paths: "Paths") -> tuple:
    """The same Triton request as the router sends it (gRPC ModelStreamInfer, one response per token), from this
    process: what Triton itself costs on the platform's path, apart from what the platform adds."""
    replica = TritonReplica(stack["triton_grpc"])
    counter = itertools.count()

    def path(stream: bool = False, max_tokens: int | None = None):
        async def send() -> float:
            first = None
            async for _ in replica.generate(paths.triton_model, paths.render(paths._text()),
                                            {"max_tokens": max_tokens or paths.max_tokens}, f"bench-{next(counter)}"):
                first = first or time.perf_counter()
            return first
        return send
    return replica, path


def _router_times(stack: dict) -> dict[str, list[float]]:
    """The router's own histograms, [sum, count] per series: its request time and its stages (checks, backend)."""
    text = httpx.get(f"http://{HOST}:{StackPorts(stack['base_port']).metrics('router')}/metrics", timeout=10).text
    out: dict[str, list[float]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("llmaas_router_request_seconds", "llmaas_router_stage_seconds"):
            continue
        for sample in family.samples:
            if sample.labels.get("model") != TEST_MODEL or not sample.name.endswith(("_sum", "_count")):
                continue
            key = sample.labels.get("stage", "request")
            out.setdefault(key, [0.0, 0.0])[sample.name.endswith("_count")] += sample.value
    return out


def _ours(run: dict[str, float]) -> float:
    return sum(v for k, v in run.items() if _group(k) not in ("triton", "jaeger", "bench client"))


async def measure(stack: dict, args, baseline: dict | None = None) -> None:
    stacks = {"stack": stack, **({"baseline": baseline} if baseline is not None else {})}
    paths = Paths(stack, args.max_tokens)
    for s in stacks.values():
        unlimited_tier(s)
    roots = {name: live_pids(s) for name, s in stacks.items()}
    trees = {name: _process_tree(r) for name, r in roots.items()}
    print(f"model {TEST_MODEL}, max_tokens={args.max_tokens}, {args.repeat} x {args.seconds:g} s per cell, "
          f"interleaved; guard enforcing; tracing sampling: {os.environ.get('LLMAAS_TRACE_SAMPLING', 'default')}"
          + (f"; baseline: {args.baseline}" if baseline is not None else ""))
    stack_paths = {name: Paths(s, args.max_tokens) for name, s in stacks.items()}
    for p in stack_paths.values():  # warm-up
        for make in (p.stack(), p.stack(stream=True, max_tokens=32)):
            await _run(make, 4, 2)
    await _run(paths.direct(), 4, 2)

    replica, grpc_stream = triton_stream(stack, paths)
    senders = {"direct": paths.direct, "grpc": grpc_stream, **{name: p.stack for name, p in stack_paths.items()}}
    order = ["direct", "grpc", *stack_paths]
    cells: dict[str, list] = {f"{cell} {path}": [] for cell in ("c1", "c32", "ttfb") for path in order}
    cpu: dict[str, dict[str, list[dict[str, float]]]] = {name: {"c32": [], "stream": [], "stream1": []}
                                                         for name in stacks}
    stages: dict[str, list[float]] = {}  # the router's mean time per stage at c=1, per repetition
    sse: dict[str, dict[str, list[float]]] = {name: {"stream": [], "stream1": []} for name in stacks}
    chunks = 32
    for _ in range(args.repeat):
        for path in order:
            tree = trees.get(path)
            timed = path == "stack"
            times = _router_times(stack) if timed else None
            r = await _run(senders[path](), 1, args.seconds)
            cells[f"c1 {path}"].append((_pct(r.latencies, 50), _pct(r.latencies, 99)))
            if timed:
                for key, (total, n) in _router_times(stack).items():
                    was = times.get(key, [0.0, 0.0])
                    if n > was[1]:
                        stages.setdefault(key, []).append((total - was[0]) / (n - was[1]) * 1000)
            before = _cpu_snapshot(tree) if tree else None
            r = await _run(senders[path](), 32, args.seconds)
            cells[f"c32 {path}"].append(r.rps)
            if tree:
                after = _cpu_snapshot(tree)
                cpu[path]["c32"].append({k: (after[k] - before[k]) / max(1, len(r.latencies)) * 1000 for k in after})
            r = await _run(senders[path](stream=True, max_tokens=chunks), 1, args.seconds)
            cells[f"ttfb {path}"].append(_pct(r.first_bytes, 50))
            if tree:
                # What a streamed token costs: streams of `chunks` tokens against streams of one, both at c=32 (at
                # different concurrencies, what batching saves per request would read as a cost per chunk).
                for key, tokens in (("stream", chunks), ("stream1", 1)):
                    before = _cpu_snapshot(tree)
                    events: list[int] = []
                    r = await _run(senders[path](stream=True, max_tokens=tokens), 32, args.seconds, events)
                    after = _cpu_snapshot(tree)
                    cpu[path][key].append({k: (after[k] - before[k]) / max(1, len(r.latencies)) * 1000
                                           for k in after})
                    sse[path][key].append(statistics.mean(events) if events else 0.0)
    await replica.close()

    titles = {"direct": "Triton HTTP generate", "grpc": "Triton gRPC stream", "stack": "Envoy + services",
              "baseline": f"{args.baseline} (baseline)"}
    shown = ["direct", "grpc", *(["baseline"] if baseline is not None else []), "stack"]
    print(f"\n{'':38} " + " ".join(f"{titles[p]:>22}" for p in shown)
          + f" {'added to HTTP':>16} {'added to gRPC':>16}" + (f" {'vs baseline':>12}" if baseline else ""))

    def row(label: str, key: str, q: int | None = None, fmt: str = "{:.2f}", added: bool = True) -> None:
        values = {p: [c[q] if q is not None else c for c in cells[f"{key} {p}"]] for p in shown}
        line = f"{label:38} " + " ".join(f"{_median_range(values[p], fmt):>22}" for p in shown)
        for base in ("direct", "grpc"):
            line += (f" {_median_range([a - b for a, b in zip(values['stack'], values[base], strict=True)]):>16}"
                     if added else f" {'':>16}")
        if baseline is not None:
            line += f" {statistics.median(values['stack']) / statistics.median(values['baseline']):>11.2f}x"
        print(line)

    row("c=1 p50 ms", "c1", 0)
    row("c=1 p99 ms", "c1", 1)
    row("c=32 requests/s", "c32", None, "{:.0f}", added=False)
    row(f"streamed ({chunks} chunks) c=1 TTFB p50 ms", "ttfb")
    if {"request", "checks", "backend"} <= stages.keys():
        own = [r - c - b for r, c, b in zip(stages["request"], stages["checks"], stages["backend"], strict=True)]
        print(f"\nc=1, the router's time per request (its histograms, mean ms): {_median_range(stages['request'])}; "
              f"the guard's and metering's checks {_median_range(stages['checks'])}, the backend "
              f"{_median_range(stages['backend'])}, the router's own {_median_range(own)}. The rest of the client's "
              f"time is Envoy's, ext_authz's and the client's.")
    for name in ([*(["baseline"] if baseline is not None else []), "stack"]):
        runs = cpu[name]
        print(f"\nCPU ms per request, {titles[name]} (c=32, median of {args.repeat}): non-streamed, and streamed "
              f"({chunks} tokens):")
        groups = sorted({_group(k) for k in runs["c32"][0]} - {"bench client"}) + ["bench client"]
        for g in groups:
            per = [sum(v for k, v in run.items() if _group(k) == g) for run in runs["c32"]]
            per_stream = [sum(v for k, v in run.items() if _group(k) == g) for run in runs["stream"]]
            print(f"  {g:14} {statistics.median(per):6.2f}   streamed {statistics.median(per_stream):6.2f}")
        ours = [_ours(run) for run in runs["c32"]]
        ours_stream = [_ours(run) for run in runs["stream"]]
        print(f"  {'Envoy + services':14} {_median_range(ours):>20}   streamed {_median_range(ours_stream)}")
        ours_one = [_ours(run) for run in runs["stream1"]]
        per_token = [(st - one) / (chunks - 1) for st, one in zip(ours_stream, ours_one, strict=True)]
        # Under load the router relays the tokens that arrived meanwhile in one message (llmaas.router.read_ahead):
        # per SSE message the client received, the same difference divided by the messages' difference.
        messages = [many - one for many, one in zip(sse[name]["stream"], sse[name]["stream1"], strict=True)]
        per_message = [(st - one) / n for st, one, n in zip(ours_stream, ours_one, messages, strict=True) if n > 0]
        print(f"  per streamed token (streams of {chunks} tokens - streams of 1) / {chunks - 1}: "
              f"{_median_range(per_token, '{:.3f}')} ms; per relayed SSE message "
              f"({statistics.median(messages):.1f} more per stream): {_median_range(per_message, '{:.3f}')} ms")
    if baseline is not None:
        ratio = statistics.median([_ours(r) for r in cpu["stack"]["c32"]]) / statistics.median(
            [_ours(r) for r in cpu["baseline"]["c32"]])
        print(f"\nCPU per request, Envoy + services, against the baseline: {ratio:.2f}x")

    # RSS before and after the soak, and at each quarter of it: growth that levels off is warm-up (caches, allocator
    # arenas); growth that keeps its pace is a leak.
    readings = [("before", {k: _rss_mib(p) for k, p in roots["stack"].items()})]
    if args.soak:
        print(f"\nsoak: {args.soak} more requests at concurrency 32 ...")
        port, make, tls = paths.stack()
        served, elapsed, errors = 0, 0.0, 0
        for quarter in range(1, 5):
            share = args.soak * quarter // 4 - args.soak * (quarter - 1) // 4
            r = await loadgen.run(HOST, port, make, concurrency=32, requests=share, tls=tls)
            served, elapsed, errors = served + len(r.latencies), elapsed + r.elapsed, errors + r.errors
            readings.append((f"{quarter}/4" if quarter < 4 else "after", {k: _rss_mib(p)
                                                                        for k, p in roots["stack"].items()}))
        print(f"  {served} served in {elapsed:.0f} s ({served / elapsed:.0f}/s), {errors} errors")
    print("\nRSS MiB " + " ".join(f"{label:>8}" for label, _ in readings))
    for k in roots["stack"]:
        print(f"  {k:12} " + " ".join(f"{values[k]:8.1f}" for _, values in readings))


@contextlib.contextmanager
def baseline_stack(rev: str, tmp: Path, *options: str):
    """A stack running `rev`'s services: its tree exported from this repository, first on the Python path of
    `llmaas up` and every process it starts (the current venv's packages otherwise)."""
    tree = tmp / "baseline-src"
    tree.mkdir()
    archive = subprocess.run(["git", "archive", rev], check=True, capture_output=True,
                             cwd=Path(__file__).resolve().parent.parent).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    with running_stack(tmp / "baseline-data", *options, env={"PYTHONPATH": str(tree / "services")}) as stack:
        yield stack


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--soak", type=int, default=0, help="requests sent before the second RSS reading")
    parser.add_argument("--baseline", metavar="REV", help="a git revision measured interleaved (e.g. main)")
    parser.add_argument("--up", nargs=argparse.REMAINDER, default=[], help="more `llmaas up` options (last)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stacks:
        baseline = stacks.enter_context(baseline_stack(args.baseline, Path(tmp), *args.up)) if args.baseline else None
        stack = stacks.enter_context(running_stack(Path(tmp) / "data", *args.up))
        asyncio.run(measure(stack, args, baseline))


if __name__ == "__main__":
    main()
