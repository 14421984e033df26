"""Long analyses in a worker process, so that the service's event loop stays free for every other request.

The analysis is CPU-bound Python: a thread would hold the GIL, and cooperative yielding between chunks still left a
small request waiting for several chunks (a gRPC call takes several turns of the event loop, each behind the chunks
of every long analysis in progress: 1.4 s under a flood of 60 KB prompts, measured). In another process, the
operating system shares the cores instead, and the worker runs at a lower priority (WORKER_NICE), so that short
requests, analysed on the event loop as before, come first.

The worker builds its own classifier from a spec (a local model directory, Triton's address, or none), loading a
model built after start as soon as its files are there. A chunk goes to the worker as text and comes back as
findings with the worker's CPU time (the request's own work, for its time budget). A worker that dies is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger("llmaas.guard")

WORKERS = 1
WORKER_NICE = 5


@dataclass(frozen=True)
class ClassifierSpec:
    kind: str  # local, triton, none
    model_dir: str = ""
    triton_address: str = ""
    triton_model: str = ""
    triton_threshold: float = 0.5


# --- in the worker process ----------------------------------------------------------------------------------------

_spec: ClassifierSpec | None = None
_detector = None
_next_look = 0.0


def _init(spec: ClassifierSpec) -> None:
    global _spec
    _spec = spec
    try:
        os.nice(WORKER_NICE)
    except OSError:
        pass
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    _worker_detector()


def _worker_detector():
    """The worker's detector; a local model is loaded once its files exist (it may be built after start)."""
    global _detector, _next_look
    from llmaas.guard.classifier import LocalClassifier, NoClassifier
    from llmaas.guard.verdict import Detector

    if _detector is not None and not isinstance(_detector.classifier, NoClassifier):
        return _detector
    if _spec.kind == "triton":
        from llmaas.guard.triton_classifier import TritonClassifier

        _detector = Detector(TritonClassifier(_spec.triton_address, _spec.triton_model, _spec.triton_threshold))
    elif _spec.kind == "local" and time.monotonic() >= _next_look:
        _next_look = time.monotonic() + 1.0
        model_dir = Path(_spec.model_dir)
        if (model_dir / "model.json").exists():
            try:
                _detector = Detector(LocalClassifier.load(model_dir))
            except (OSError, ValueError):
                _detector = None  # being written: look again later
    if _detector is None:
        _detector = Detector(NoClassifier())
    return _detector


def _chunk(text: str, kind: str) -> tuple[list[tuple[str, str, float]], float]:
    started = time.thread_time()
    findings = _worker_detector().chunk(text, kind)
    return [(f.layer, f.reason, f.score) for f in findings], time.thread_time() - started


def _ready() -> bool:
    return True


# --- in the service ------------------------------------------------------------------------------------------------


class Offload:
    """The worker processes, started at once (importing the guard takes a second or two), replaced if one dies."""

    def __init__(self, spec: ClassifierSpec, workers: int = WORKERS) -> None:
        self._spec = spec
        self._workers = workers
        self._pool = self._start()

    def _start(self) -> ProcessPoolExecutor:
        # spawn: a fork of a process running gRPC's threads is not safe.
        pool = ProcessPoolExecutor(self._workers, mp_context=multiprocessing.get_context("spawn"),
                                   initializer=_init, initargs=(self._spec,))
        pool.submit(_ready)  # starts the workers now, not with the first long prompt
        return pool

    async def chunk(self, text: str, kind: str):
        """The findings of one chunk (rules.Finding) and the worker's CPU time for it."""
        from llmaas.guard.rules import Finding

        loop = asyncio.get_running_loop()
        for attempt in (1, 2):
            pool = self._pool
            try:
                found, cpu = await loop.run_in_executor(pool, _chunk, text, kind)
                return [Finding(*f) for f in found], cpu
            except BrokenProcessPool:
                if attempt == 2:
                    raise
                log.warning("guard worker process died: starting another")
                if pool is self._pool:
                    self._pool = self._start()
                    pool.shutdown(wait=False, cancel_futures=True)
        raise AssertionError("unreachable")

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
