"""python -m llmaas.guard — the prompt security service."""

import logging
import subprocess
import sys
import threading
from pathlib import Path

from llmaas.common import runtime
from llmaas.common.config import ConfigError, env_float, env_int, env_str, grpc_port, internal_secret
from llmaas.common.db import make_engine, migrate
from llmaas.common.server import run_service, serve
from llmaas.common.telemetry import setup_logging
from llmaas.guard import budget as limits
from llmaas.guard.behaviour import (
    REPETITION_SCORE,
    REPETITION_SECONDS,
    Behaviour,
    BehaviourConfig,
    MemoryWindow,
    RedisWindow,
)
from llmaas.guard.classifier import Classifier, LocalClassifier, NoClassifier, PendingClassifier
from llmaas.guard.offload import WORKERS, ClassifierSpec, Offload
from llmaas.guard.policy import MODES, Policy, PolicyStore
from llmaas.guard.refusals import RefusalLog
from llmaas.guard.servicer import GuardServicer
from llmaas.guard.training.train import DEFAULT_MODEL_DIR
from llmaas.guard.v1 import guard_pb2, guard_pb2_grpc
from llmaas.guard.verdict import Detector

log = logging.getLogger("llmaas.guard")

DEFAULT_THRESHOLD = 0.5


def _classifier() -> Classifier:
    kind = env_str("LLMAAS_GUARD_CLASSIFIER", "local")
    if kind == "none":
        return NoClassifier()
    if kind == "triton":
        from llmaas.guard.triton_classifier import TritonClassifier

        return TritonClassifier(env_str("LLMAAS_GUARD_TRITON_GRPC"), env_str("LLMAAS_GUARD_TRITON_MODEL"),
                                env_float("LLMAAS_GUARD_TRITON_THRESHOLD", 0.5))
    if kind != "local":
        raise ConfigError("LLMAAS_GUARD_CLASSIFIER must be local, triton or none")
    model_dir = Path(env_str("LLMAAS_GUARD_MODEL_DIR", str(DEFAULT_MODEL_DIR)))
    if (model_dir / "model.json").exists():
        return LocalClassifier.load(model_dir)
    # Built from the project's data, never downloaded (`llmaas guard train`), in a child process: rules alone guard
    # the first requests, and training neither delays the service's start nor competes with it for the GIL.
    pending = PendingClassifier()

    def build() -> None:
        log.warning("no guard model yet: training it; rules only until it is ready",
                    extra={"fields": {"model_dir": str(model_dir)}})
        argv = [sys.executable, "-m", "llmaas.cli", "guard", "train", "--model-dir", str(model_dir)]
        done = subprocess.run(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            log.error("guard model training failed: rules only",
                      extra={"fields": {"model_dir": str(model_dir), "error": done.stderr[-500:]}})
            return
        pending.ready(LocalClassifier.load(model_dir))
        runtime.settle()  # the model is start-up state too (serve() settled the rest)
        log.info("guard model ready", extra={"fields": {"model_dir": str(model_dir)}})

    threading.Thread(target=build, name="guard-train", daemon=True).start()
    return pending


def _window():
    url = env_str("LLMAAS_GUARD_REDIS_URL", "memory")
    if url == "memory":
        return MemoryWindow()
    import redis.asyncio

    return RedisWindow(redis.asyncio.from_url(url))


def _budget() -> limits.Budget:
    """What one request may cost (budget.py)."""
    return limits.Budget(
        max_chars=env_int("LLMAAS_GUARD_MAX_ANALYSED_CHARS", limits.MAX_ANALYSED_CHARS),
        work_seconds=env_float("LLMAAS_GUARD_WORK_SECONDS", limits.WORK_SECONDS),
        tenant_concurrency=env_int("LLMAAS_GUARD_TENANT_CONCURRENCY", limits.TENANT_CONCURRENCY),
        global_concurrency=env_int("LLMAAS_GUARD_CONCURRENCY", limits.GLOBAL_CONCURRENCY))


def _offload() -> Offload | None:
    """The worker processes that analyse long requests (offload.py); LLMAAS_GUARD_WORKERS=0: none, on the event
    loop between yields."""
    workers = env_int("LLMAAS_GUARD_WORKERS", WORKERS)
    if workers <= 0:
        return None
    kind = env_str("LLMAAS_GUARD_CLASSIFIER", "local")
    spec = (ClassifierSpec("triton", triton_address=env_str("LLMAAS_GUARD_TRITON_GRPC"),
                           triton_model=env_str("LLMAAS_GUARD_TRITON_MODEL"),
                           triton_threshold=env_float("LLMAAS_GUARD_TRITON_THRESHOLD", 0.5)) if kind == "triton"
            else ClassifierSpec("local", model_dir=env_str("LLMAAS_GUARD_MODEL_DIR", str(DEFAULT_MODEL_DIR)))
            if kind == "local" else ClassifierSpec("none"))
    return Offload(spec, workers)


def main() -> None:
    setup_logging()  # before serve(): the model may start building first
    mode = env_str("LLMAAS_GUARD_MODE", "enforce")
    if mode not in MODES:
        raise ConfigError(f"LLMAAS_GUARD_MODE must be one of {', '.join(MODES)}")
    default = Policy(mode, env_float("LLMAAS_GUARD_THRESHOLD", DEFAULT_THRESHOLD))
    engine = make_engine(env_str("LLMAAS_GUARD_DATABASE_URL"))
    migrate(engine, Path(__file__).parent / "migrations")
    behaviour = Behaviour(_window(), BehaviourConfig(
        repetition_limit=env_int("LLMAAS_GUARD_REPETITION_LIMIT", 30),
        repetition_seconds=env_float("LLMAAS_GUARD_REPETITION_SECONDS", REPETITION_SECONDS),
        repetition_score=env_float("LLMAAS_GUARD_REPETITION_SCORE", REPETITION_SCORE)))
    servicer = GuardServicer(Detector(_classifier(), _budget(), _offload()), behaviour, PolicyStore(engine, default),
                             env_str("LLMAAS_ADMIN_TOKEN"), internal_secret(), RefusalLog(engine))

    def register(server):
        guard_pb2_grpc.add_GuardServiceServicer_to_server(servicer, server)
        guard_pb2_grpc.add_GuardInternalServiceServicer_to_server(servicer, server)
        return [guard_pb2.DESCRIPTOR.services_by_name[name].full_name
                for name in ("GuardService", "GuardInternalService")]

    run_service(serve("guard", grpc_port(), register))


if __name__ == "__main__":
    main()
