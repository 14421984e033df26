"""The guard's cost per CheckPrompt call, as the router makes it: ~300-byte chat prompts in several languages through
the whole servicer path (policy lookup, behaviour window, rules, learned layer, verdict, span attributes, the
budget/offload wrapper), CPU time per call; this tree's guard against another revision's, in one run.

    .venv/bin/python -m bench.guard_check [--against HEAD] [--calls 3000] [--rounds 3] [--grpc] [--seconds 4]

In process (always): each variant runs in a child process of its own (the other revision's `llmaas/guard` from
`git archive`, everything else from this tree), the variants taking turns for --rounds rounds; each child times
--calls calls after a warm-up, with the service's model, an SQLite policy store, the in-memory behaviour window, a
recording span and the service's JSON log formatter. Reported: the median over rounds (and range) of the mean CPU
per call, per kind of prompt and overall (process CPU, so a thread hop counts too). Every child also answers the
held-out test split (deploy/guard/model/test.jsonl, as user prompts and as tool results) and the chat prompts
through the servicer: the digest of every response must be the same for both variants (same decisions, scores and
findings), or the bench says so and exits 1.

--grpc adds the service itself (`python -m llmaas.guard`, as `llmaas up` starts it, with its worker process) under a
client process at concurrency 32 on the same prompts, and the floor: the same server answering a constant response
from a servicer that does nothing (grpc.aio with serve()'s tracing and error interceptors), and a plain grpc.aio
server doing the same. CPU per call of the server process and, apart, of its worker process (idle for short prompts),
from /proc, over --seconds per round once both have finished starting, the variants interleaved. Tracing as without
a collector (spans recorded, not exported).
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import os
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

# Set by the parent for a child that runs another revision's guard: installed before anything imports llmaas.guard,
# here at import time, so that the service's spawned worker process (which imports this module again) has it too.
SOURCE_ENV = "LLMAAS_BENCH_GUARD_SOURCE"


def _use_guard_from(directory: Path) -> None:
    """llmaas.guard (and every llmaas.guard.* module) from directory instead of this tree."""
    import llmaas

    spec = importlib.util.spec_from_file_location("llmaas.guard", directory / "__init__.py",
                                                  submodule_search_locations=[str(directory)])
    module = importlib.util.module_from_spec(spec)
    sys.modules["llmaas.guard"] = module
    spec.loader.exec_module(module)
    llmaas.guard = module


if os.environ.get(SOURCE_ENV):
    _use_guard_from(Path(os.environ[SOURCE_ENV]))

ROOT = Path(__file__).resolve().parent.parent
PROMPT_BYTES = 300
PER_KIND = 48
CONCURRENCY = 32
TENANT, END_USER = "bench-tenant", "bench-user"
INTERNAL_SECRET = "bench-internal-secret-0123456789abcd"
# Kinds of prompt: honest chat in five languages, and attacks (blocked, logged). "mix" is their round-robin.
HONEST = ("english", "french", "german", "chinese", "japanese")
KINDS = (*HONEST, "attack")


# --- prompts ------------------------------------------------------------------------------------------------------

def _rows(name: str) -> list[dict]:
    from llmaas.guard.training.corpus import GUARD_DATA_DIR

    return [json.loads(line) for line in (GUARD_DATA_DIR / "public" / name).read_text(encoding="utf-8").splitlines()]


def _lines(name: str) -> list[str]:
    from llmaas.guard.training.corpus import GUARD_DATA_DIR

    return [line for line in (GUARD_DATA_DIR / name).read_text(encoding="utf-8").splitlines() if line.strip()]


def _about(texts: list[str], start: int, size: int = PROMPT_BYTES) -> str:
    """Texts from `start` on joined until about `size` bytes of UTF-8, cut at the last space (or sentence end)."""
    body, i = "", start
    while len(body.encode()) < size:
        body = f"{body} {texts[i % len(texts)]}".strip()
        i += 1
    cut = body.encode()[:size].decode(errors="ignore")
    end = max(cut.rfind(" "), cut.rfind("。"), cut.rfind("？"))
    return cut[:end + 1].strip() if end > size // 2 else cut


def prompts() -> dict[str, list[str]]:
    from llmaas.guard import language

    english = [r["text"] for r in _rows("wildguard-benign.jsonl") if len(r["text"]) < 400]
    deepset = _rows("deepset-prompt-injections.jsonl")
    german = [r["text"] for r in deepset if r["label"] == 0 and language.guess(r["text"]) == "de"]
    attacks = [r["text"] for r in deepset if r["label"] == 1 and len(r["text"]) < 250]
    pools = {"english": english, "french": [r["text"] for r in _rows("french-benign.jsonl")], "german": german,
             "chinese": _lines("benign-zh.txt"), "japanese": _lines("benign-ja.txt")}
    out = {kind: [_about(pool, 3 * i) for i in range(PER_KIND)] for kind, pool in pools.items()}
    # An attack inside honest chat, as it comes.
    out["attack"] = [_about(english[500:], 3 * i, PROMPT_BYTES - len(attacks[i].encode()) - 1) + " " + attacks[i]
                     for i in range(PER_KIND)]
    return out


def mix(by_kind: dict[str, list[str]]) -> list[tuple[str, str]]:
    """(kind, prompt) round-robin over the kinds: one tenant and end user's conversation, never the same prompt twice
    in a row (that is the repetition rule's business)."""
    return [(kind, by_kind[kind][i]) for i in range(PER_KIND) for kind in KINDS]


# --- the servicer in process (a child) ----------------------------------------------------------------------------

class _Context:
    """What CheckPrompt asks of a gRPC context: the caller's deadline (the router sets one)."""

    def time_remaining(self) -> float:
        return 30.0


def _servicer(data_dir: Path, model_dir: Path):
    from llmaas.common.db import make_engine, migrate
    from llmaas.guard import __file__ as guard_init
    from llmaas.guard.behaviour import Behaviour, MemoryWindow
    from llmaas.guard.classifier import LocalClassifier
    from llmaas.guard.policy import Policy, PolicyStore
    from llmaas.guard.servicer import GuardServicer
    from llmaas.guard.verdict import Detector

    engine = make_engine(f"sqlite:///{data_dir / 'guard.db'}")
    migrate(engine, Path(guard_init).parent / "migrations")
    return GuardServicer(Detector(LocalClassifier.load(model_dir)), Behaviour(MemoryWindow()),
                         PolicyStore(engine, Policy("enforce", 0.5)), "bench-admin", "bench-internal-secret-0123456789abcd")


def _request(text: str, source: int | None = None, i: int = 0):
    from llmaas.guard.v1 import guard_pb2

    return guard_pb2.CheckPromptRequest(
        tenant_id=TENANT, end_user_id=END_USER, request_id=f"req-{i}",
        parts=[guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_SYSTEM, text="You are a helpful assistant."),
               guard_pb2.PromptPart(source=guard_pb2.PART_SOURCE_USER if source is None else source, text=text)])


async def _parity(servicer) -> str:
    """The digest of every response over the test split (as user prompts, then as tool results, each text under
    its own end user so that the behaviour window starts empty) and the chat prompts (one conversation)."""
    from llmaas.guard.v1 import guard_pb2

    digest = hashlib.sha256()
    rows = [json.loads(line) for line in (ROOT / "deploy/guard/model/test.jsonl").open(encoding="utf-8")]
    for source in (guard_pb2.PART_SOURCE_USER, guard_pb2.PART_SOURCE_TOOL_RESULT):
        for i, row in enumerate(rows):
            request = _request(row["text"], source, i)
            request.end_user_id = f"parity-{source}-{i}"
            digest.update((await servicer.CheckPrompt(request, _Context())).SerializeToString(deterministic=True))
    for i, (_, text) in enumerate(mix(prompts()) * 2):
        digest.update((await servicer.CheckPrompt(_request(text, i=i), _Context())).SerializeToString(
            deterministic=True))
    return digest.hexdigest()


async def _inprocess(calls: int, model_dir: Path, parity: bool) -> dict:
    import gc
    import logging

    from llmaas.common import runtime
    from llmaas.common.telemetry import JsonFormatter
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider

    # The service's log formatter (a flagged verdict is logged), to nowhere.
    handler = logging.StreamHandler(open(os.devnull, "w"))
    handler.setFormatter(JsonFormatter())
    logging.getLogger().handlers[:] = [handler]
    logging.getLogger().setLevel(logging.INFO)
    trace.set_tracer_provider(TracerProvider())
    tracer = trace.get_tracer("bench")
    with tempfile.TemporaryDirectory() as data_dir:
        digest = await _parity(_servicer(_mkdir(Path(data_dir) / "parity"), model_dir)) if parity else None
        servicer = _servicer(Path(data_dir), model_dir)
        requests = [(kind, _request(text, i=i)) for i, (kind, text) in enumerate(mix(prompts()))]
        context = _Context()
        for _ in range(2):  # warm-up: every prompt twice
            for _, request in requests:
                await servicer.CheckPrompt(request, context)
        runtime.settle()  # as the service does once it serves
        per_kind: dict[str, list[int]] = {kind: [] for kind in KINDS}
        clock = time.thread_time_ns
        with tracer.start_as_current_span("bench"):  # the interceptor's span, on which the verdict is recorded
            cpu0 = time.process_time_ns()
            for i in range(calls):
                kind, request = requests[i % len(requests)]
                c0 = clock()
                await servicer.CheckPrompt(request, context)
                per_kind[kind].append(clock() - c0)
            cpu = time.process_time_ns() - cpu0
        gc.collect()
    return {"parity": digest, "cpu_us": cpu / calls / 1e3,
            "per_kind_us": {kind: statistics.fmean(v) / 1e3 for kind, v in per_kind.items() if v}}


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- over gRPC (children: the service, a load client) ------------------------------------------------------------

def _serve_null(bare: bool) -> None:
    """The guard's server as serve() builds it (bare: a plain grpc.aio server, without serve()'s tracing and error
    interceptors), with a servicer that answers at once: the floor."""
    from llmaas.common.server import serve
    from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc

    answer = guard_pb2.CheckPromptResponse(decision=guard_pb2.DECISION_ALLOW, mode=guard_pb2.GUARD_MODE_ENFORCE,
                                           threshold=0.5)

    class Null(guard_pb2_grpc.GuardInternalServiceServicer):
        async def CheckPrompt(self, request, context):
            return answer

    port = int(os.environ["LLMAAS_GRPC_PORT"])
    if not bare:
        def register(server):
            guard_pb2_grpc.add_GuardInternalServiceServicer_to_server(Null(), server)
            return [guard_pb2.DESCRIPTOR.services_by_name["GuardInternalService"].full_name]

        asyncio.run(serve("guard", port, register))
        return

    async def plain() -> None:
        import grpc

        server = grpc.aio.server()
        guard_pb2_grpc.add_GuardInternalServiceServicer_to_server(Null(), server)
        server.add_insecure_port(f"127.0.0.1:{port}")
        await server.start()
        await server.wait_for_termination()

    asyncio.run(plain())


async def _load(port: int, seconds: float) -> None:
    import grpc
    from llmaas.common.identity import IDENTITY_HEADER, Identity, encode_identity
    from llmaas.common.service_auth import ROUTER, ServiceCredentials
    from llmaas.guard.v1 import guard_pb2_grpc

    requests = [_request(text, i=i) for i, (_, text) in enumerate(mix(prompts()))]
    # What the router sends with each: its service credential and the request's signed identity.
    service = ServiceCredentials(ROUTER, INTERNAL_SECRET).metadata("guard")
    metadata = [(*service, (IDENTITY_HEADER, encode_identity(Identity(TENANT, "key"), INTERNAL_SECRET,
                                                             request_id=r.request_id, ttl=3600)))
                for r in requests]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = guard_pb2_grpc.GuardInternalServiceStub(channel)
        for _ in range(100):  # ready?
            try:
                await stub.CheckPrompt(requests[0], timeout=5, metadata=metadata[0])
                break
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.2)
        done, stop = 0, 0.0

        async def worker(k: int) -> None:
            nonlocal done
            i = k
            while time.monotonic() < stop:
                await stub.CheckPrompt(requests[i % len(requests)], timeout=10, metadata=metadata[i % len(requests)])
                done += 1
                i += CONCURRENCY

        stop = time.monotonic() + 1.0  # warm-up
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        print("go", flush=True)
        done, stop = 0, time.monotonic() + seconds
        await asyncio.gather(*(worker(k) for k in range(CONCURRENCY)))
        print(done, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settled(pid: int, port: int, timeout: float = 60.0) -> None:
    """Returns once the server listens and it and its worker process have finished starting (importing the guard,
    loading the model: seconds of CPU that would otherwise land in the measured window)."""
    from bench.request_path import _cpu_seconds, _process_tree

    until, before = time.monotonic() + timeout, -1.0
    while time.monotonic() < until:
        time.sleep(0.5)
        now = sum(map(_cpu_seconds, _process_tree({"guard": pid})["guard"]))
        with socket.socket() as s:
            listening = s.connect_ex(("127.0.0.1", port)) == 0
        if listening and now - before < 0.02:
            return
        before = now
    raise SystemExit("the guard service did not settle")


def _grpc_round(variant: str, source: Path | None, seconds: float, model_dir: Path) -> dict:
    """One variant, one round: CPU ms per call of the server process and of its descendants (the guard's worker
    process, idle for short prompts once it has loaded the model), calls per second."""
    from bench.request_path import _cpu_seconds, _process_tree

    port = _free_port()
    with tempfile.TemporaryDirectory() as data_dir:
        env = {**os.environ, "LLMAAS_GRPC_PORT": str(port), "LLMAAS_GUARD_DATABASE_URL": f"sqlite:///{data_dir}/g.db",
               "LLMAAS_ADMIN_TOKEN": "bench-admin", "LLMAAS_INTERNAL_SECRET": INTERNAL_SECRET,
               "LLMAAS_GUARD_MODEL_DIR": str(model_dir), "LLMAAS_LOG_LEVEL": "WARNING", "PYTHONUNBUFFERED": "1"}
        env.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        if source is not None:
            env[SOURCE_ENV] = str(source)
        server = subprocess.Popen([sys.executable, "-m", "bench.guard_check", "--child", f"serve-{variant}"],
                                  cwd=ROOT, env=env, stdout=subprocess.DEVNULL)
        client = None
        try:
            _settled(server.pid, port)
            client = subprocess.Popen([sys.executable, "-m", "bench.guard_check", "--child", "load", "--port",
                                       str(port), "--seconds", str(seconds)], cwd=ROOT, stdout=subprocess.PIPE,
                                      text=True, env={k: v for k, v in env.items() if k != SOURCE_ENV})
            assert client.stdout.readline().strip() == "go", "the load client failed"
            workers = _process_tree({"guard": server.pid})["guard"][1:]
            own0, workers0 = _cpu_seconds(server.pid), sum(map(_cpu_seconds, workers))
            done = int(client.stdout.readline())
            own, worker = _cpu_seconds(server.pid) - own0, sum(map(_cpu_seconds, workers)) - workers0
            client.wait()
        finally:
            if client is not None and client.poll() is None:
                client.kill()
                client.wait()
            server.terminate()
            server.wait()
    return {"server": own / done * 1e3, "worker": worker / done * 1e3, "rate": done / seconds}


# --- the parent ---------------------------------------------------------------------------------------------------

def _checkout(revision: str, into: Path) -> Path:
    """revision's services/llmaas/guard, extracted under `into`."""
    archive = subprocess.run(["git", "archive", revision, "services/llmaas/guard"], cwd=ROOT, check=True,
                             capture_output=True).stdout
    path = into / "archive.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        tar.extractall(into, filter="data")
    return into / "services" / "llmaas" / "guard"


def _child_inprocess(source: Path | None, calls: int, model_dir: Path, parity: bool) -> dict:
    env = {**os.environ}
    env.pop(SOURCE_ENV, None)
    if source is not None:
        env[SOURCE_ENV] = str(source)
    argv = [sys.executable, "-m", "bench.guard_check", "--child", "inprocess", "--calls", str(calls), "--model-dir",
            str(model_dir), *(["--parity"] if parity else [])]
    out = subprocess.run(argv, cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _median_range(values: list[float], scale: float = 1.0, digits: int = 0) -> str:
    v = [x * scale for x in values]
    return f"{statistics.median(v):.{digits}f} [{min(v):.{digits}f}-{max(v):.{digits}f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--against", default="HEAD", help="the revision whose guard is the baseline")
    parser.add_argument("--calls", type=int, default=3000, help="timed calls per child")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--grpc", action="store_true", help="also the service over gRPC, and the floor")
    parser.add_argument("--seconds", type=float, default=4.0, help="timed load per gRPC round")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--model-dir", help=argparse.SUPPRESS)
    parser.add_argument("--parity", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child == "inprocess":
        print(json.dumps(asyncio.run(_inprocess(args.calls, Path(args.model_dir), args.parity))))
        return
    if args.child == "load":
        asyncio.run(_load(args.port, args.seconds))
        return
    if args.child in ("serve-null", "serve-bare"):
        _serve_null(bare=args.child == "serve-bare")
        return
    if args.child == "serve-guard":
        from llmaas.guard.__main__ import main as guard_main

        guard_main()
        return

    from llmaas.guard.training.train import DEFAULT_MODEL_DIR

    if not (DEFAULT_MODEL_DIR / "model.json").exists():
        raise SystemExit(f"no guard model in {DEFAULT_MODEL_DIR}: run `llmaas guard train` first")
    with tempfile.TemporaryDirectory() as tmp:
        baseline = _checkout(args.against, Path(tmp))
        variants = {args.against: baseline, "this tree": None}
        results: dict[str, list[dict]] = {name: [] for name in variants}
        for round_ in range(args.rounds):
            for name, source in variants.items():  # the responses' digest in the first round only (a few seconds)
                results[name].append(_child_inprocess(source, args.calls, DEFAULT_MODEL_DIR, parity=round_ == 0))
        grpc_results: dict[str, list[dict]] = {}
        if args.grpc:
            servers = {f"service ({args.against})": ("guard", baseline), "service (this tree)": ("guard", None),
                       "floor (null servicer)": ("null", None), "bare grpc.aio, null servicer": ("bare", None)}
            grpc_results = {name: [] for name in servers}
            for _ in range(args.rounds):
                for name, (variant, source) in servers.items():
                    grpc_results[name].append(_grpc_round(variant, source, args.seconds, DEFAULT_MODEL_DIR))

    print(f"guard CheckPrompt, in process: CPU us per call (median [min-max] over {args.rounds} rounds of "
          f"{args.calls} calls), ~{PROMPT_BYTES}-byte prompts with a system prompt, one tenant and end user")
    names = list(variants)
    print(f"{'prompt':>10} " + " ".join(f"{n:>22}" for n in names) + f" {'ratio':>7}")
    for kind in KINDS:
        cells = [_median_range([r["per_kind_us"][kind] for r in results[n]]) for n in names]
        ratio = (statistics.median(r["per_kind_us"][kind] for r in results[names[1]])
                 / statistics.median(r["per_kind_us"][kind] for r in results[names[0]]))
        print(f"{kind:>10} " + " ".join(f"{c:>22}" for c in cells) + f" {ratio:7.2f}")
    cells = [_median_range([r["cpu_us"] for r in results[n]]) for n in names]
    ratio = (statistics.median(r["cpu_us"] for r in results[names[1]])
             / statistics.median(r["cpu_us"] for r in results[names[0]]))
    print(f"{'mix':>10} " + " ".join(f"{c:>22}" for c in cells) + f" {ratio:7.2f}   (process CPU, every thread)")
    digests = {r["parity"] for n in names for r in results[n] if r["parity"]}
    same = len(digests) == 1
    print(f"responses over the test split (prompts and tool results) and the chat prompts: "
          f"{'identical' if same else 'DIFFERENT'} ({len(digests)} digest{'s' if len(digests) > 1 else ''})")
    if grpc_results:
        print(f"\nover gRPC, concurrency {CONCURRENCY} (a client process on the same cores), {args.seconds:g} s per "
              f"round, median [min-max] over {args.rounds} rounds")
        print(f"{'server':>28} {'CPU ms per call':>22} {'worker process':>20} {'calls/s':>18}")
        for name, values in grpc_results.items():
            print(f"{name:>28} {_median_range([v['server'] for v in values], digits=3):>22} "
                  f"{_median_range([v['worker'] for v in values], digits=3):>20} "
                  f"{_median_range([v['rate'] for v in values]):>18}")
    if not same:
        sys.exit(1)


if __name__ == "__main__":
    main()
