"""Runs the stack's components as child processes: start in stages, wait for health, watch, stop cleanly.

Each child gets its own process group (so a terminal's Ctrl-C reaches only the supervisor, which then stops the
children in reverse order: SIGTERM, a grace period, then SIGKILL of the whole group — no orphans, no stale ports).
Output of each child goes to <data_dir>/logs/<name>.log.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from llmaas.stack.component import Component

STOP_GRACE_SECONDS = 10.0
MAX_RESTARTS = 5
RESTART_WINDOW = 60.0


class StartError(RuntimeError):
    pass


@dataclass
class Running:
    component: Component
    process: subprocess.Popen
    log_path: Path
    started: float


def _die_with_parent() -> None:
    # Runs in the child before exec: if the supervisor is killed outright (SIGKILL, OOM), the kernel sends SIGTERM
    # to the child, so no component outlives it.
    if sys.platform == "linux":
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _log_tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


class Supervisor:
    def __init__(self, data_dir: Path, on_event: Callable[[str, str, float], None] = lambda *_: None) -> None:
        """on_event(component, event, seconds) reports 'starting', 'healthy', 'stopping', 'stopped'."""
        self._logs = data_dir / "logs"
        self._logs.mkdir(parents=True, exist_ok=True)
        self._on_event = on_event
        self.running: list[Running] = []
        self._restarts: dict[str, list[float]] = {}

    def _spawn(self, component: Component) -> Running:
        if component.prepare is not None:
            component.prepare()
        log_path = self._logs / f"{component.name}.log"
        log_file = open(log_path, "ab")
        try:
            process = subprocess.Popen(
                component.argv, env={**os.environ, **component.env}, cwd=component.cwd, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log_file.close()
        self._on_event(component.name, "starting", 0.0)
        r = Running(component, process, log_path, time.monotonic())
        self.running.append(r)
        return r

    def start_stage(self, components: list[Component]) -> None:
        """Starts the components together and returns once every one is healthy."""
        pending = [self._spawn(c) for c in components]
        while pending:
            for r in list(pending):
                code = r.process.poll()
                if code is not None:
                    raise StartError(f"{r.component.name} exited with code {code} while starting; "
                                     f"last lines of {r.log_path}:\n{_log_tail(r.log_path)}")
                if r.component.ready():
                    pending.remove(r)
                    self._on_event(r.component.name, "healthy", time.monotonic() - r.started)
                elif time.monotonic() - r.started > r.component.ready_timeout:
                    raise StartError(f"{r.component.name} was not healthy after {r.component.ready_timeout:.0f} s; "
                                     f"last lines of {r.log_path}:\n{_log_tail(r.log_path)}")
            if pending:
                time.sleep(0.2)

    def restart_exited(self) -> Running | None:
        """Restarts children that died (a crashed service comes back, as under any process manager). Returns a
        child that keeps dying (more than MAX_RESTARTS within RESTART_WINDOW seconds), for the caller to give up."""
        now = time.monotonic()
        for i, r in enumerate(self.running):
            if r.process.poll() is None:
                continue
            self._on_event(r.component.name, f"exited ({r.process.returncode}), restarting", 0.0)
            history = [t for t in self._restarts.get(r.component.name, []) if now - t < RESTART_WINDOW]
            if len(history) >= MAX_RESTARTS:
                return r
            self._restarts[r.component.name] = [*history, now]
            self.running.pop(i)
            replacement = self._spawn(r.component)
            self.running.remove(replacement)
            self.running.insert(i, replacement)  # keep the stop order
        return None

    def stop_all(self) -> None:
        """Stops every child; on_event('stopped') reports the seconds since the stop began."""
        began = time.monotonic()
        for r in reversed(self.running):
            self._on_event(r.component.name, "stopping", 0.0)
            _signal_group(r.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for r in reversed(self.running):
            try:
                r.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of the group (e.g. Triton's backend stubs) goes too.
            _signal_group(r.process, signal.SIGKILL)
            r.process.wait()
            self._on_event(r.component.name, "stopped", time.monotonic() - began)
        self.running.clear()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
