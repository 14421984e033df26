"""Runs the stack's components as child processes: start in stages, wait for health, watch, stop cleanly.

Each child gets its own process group (so a terminal's Ctrl-C reaches only the supervisor, which then stops the
children in reverse order: SIGTERM, a grace period, then SIGKILL of the whole group — no orphans, no stale ports).
Output of each child goes to <data_dir>/logs/<name>.log.

A child that dies once the stack is up is restarted after a back-off (see RestartPolicy); `restart_exited` never
sleeps, so one child's back-off does not stop the others from being watched.
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


class RestartError(RuntimeError):
    """A dead child could not even be started again (its `prepare` or the exec failed)."""


@dataclass(frozen=True)
class RestartPolicy:
    # One more exit after this many within `window` seconds and the child is declared failing.
    max_restarts: int = MAX_RESTARTS
    window: float = RESTART_WINDOW
    # Wait before the first restart, doubled for every further exit of a child that never stayed up `stable_after`
    # seconds (a crash loop must not burn the CPU the other components need), up to `max_delay`.
    first_delay: float = 0.5
    max_delay: float = 8.0
    stable_after: float = 60.0

    def delay(self, failures: int) -> float:
        """Back-off before restarting a child that has now failed `failures` times in a row (1 for the first)."""
        return min(self.first_delay * 2 ** (failures - 1), self.max_delay)


@dataclass
class Running:
    component: Component
    process: subprocess.Popen
    log_path: Path
    started: float
    # Set once the child has died (and been reaped): when it is due to be started again.
    restart_due: float | None = None


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


def describe_exit(returncode: int) -> str:
    """'code 3' or 'signal SIGKILL'."""
    if returncode >= 0:
        return f"code {returncode}"
    try:
        return f"signal {signal.Signals(-returncode).name}"
    except ValueError:
        return f"signal {-returncode}"


def private_dir(path: Path) -> None:
    """A directory only its owner may enter (0700), made so if it already existed."""
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    path.chmod(0o700)


def open_private_log(path: Path):
    """A log file for appending, readable by its owner only (0600), made so if it already existed: logs name
    tenants, keys and clients."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return os.fdopen(fd, "ab")


class Supervisor:
    def __init__(self, data_dir: Path, on_event: Callable[[str, str, float], None] = lambda *_: None,
                 on_restart: Callable[[Running], None] = lambda _: None,
                 policy: RestartPolicy = RestartPolicy()) -> None:
        """on_event(component, event, seconds) reports 'starting', 'healthy', 'stopping', 'stopped', and
        'exited (signal SIGKILL), restart in 0.5s' / 'exited (code 1), giving up' (seconds: the back-off).
        on_restart(running) is called with each restarted child, once its new process exists."""
        self._logs = data_dir / "logs"
        private_dir(data_dir)
        private_dir(self._logs)
        self._on_event = on_event
        self._on_restart = on_restart
        self.policy = policy
        self.running: list[Running] = []
        self._exits: dict[str, list[float]] = {}  # recent exit times, per component
        self._failures: dict[str, int] = {}  # exits in a row without a stable run, per component

    def _launch(self, component: Component) -> Running:
        if component.prepare is not None:
            component.prepare()
        log_path = self._logs / f"{component.name}.log"
        log_file = open_private_log(log_path)
        try:
            process = subprocess.Popen(
                component.argv, env={**os.environ, **component.env}, cwd=component.cwd, stdin=subprocess.DEVNULL,
                stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True,
                preexec_fn=_die_with_parent)
        finally:
            log_file.close()
        self._on_event(component.name, "starting", 0.0)
        return Running(component, process, log_path, time.monotonic())

    def _spawn(self, component: Component) -> Running:
        r = self._launch(component)
        self.running.append(r)
        return r

    def pids(self) -> dict[str, int]:
        """The current process id of every child, by component name."""
        return {r.component.name: r.process.pid for r in self.running}

    def start_stage(self, components: list[Component]) -> None:
        """Starts the components together and returns once every one is healthy."""
        pending = [self._spawn(c) for c in components]
        while pending:
            for r in list(pending):
                if _exited(r.process):
                    code = _reap(r.process)
                    raise StartError(f"{r.component.name} exited ({describe_exit(code)}) while starting; "
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
        """Call it every fraction of a second once the stack is up; it never waits. A child found dead has what
        is left of its process group killed and its restart scheduled after the back-off; a child whose restart is
        due is started again (the same Component, under the same name) and reported to on_restart. Returns a child
        that keeps dying (more than max_restarts exits within window seconds), for the caller to give up."""
        now = time.monotonic()
        for i, r in enumerate(self.running):
            if r.restart_due is None:
                if not _exited(r.process):
                    continue
                _reap(r.process)
                if self._keeps_failing(r, now):
                    return r
            if now >= r.restart_due:
                try:
                    self.running[i] = replacement = self._launch(r.component)
                except Exception as e:
                    raise RestartError(f"{r.component.name} could not be restarted: {e}") from e
                self._on_restart(replacement)
        return None

    def _keeps_failing(self, r: Running, now: float) -> bool:
        """Records the exit of `r`: True when it is one too many, else schedules the restart (r.restart_due)."""
        name, policy = r.component.name, self.policy
        how = describe_exit(r.process.returncode)
        recent = [t for t in self._exits.get(name, []) if now - t < policy.window]
        if len(recent) >= policy.max_restarts:
            self._on_event(name, f"exited ({how}), giving up", 0.0)
            return True
        self._exits[name] = [*recent, now]
        failures = 1 if now - r.started >= policy.stable_after else self._failures.get(name, 0) + 1
        self._failures[name] = failures
        delay = policy.delay(failures)
        r.restart_due = now + delay
        self._on_event(name, f"exited ({how}), restart in {delay:.1f}s", delay)
        return False

    def stop_all(self) -> None:
        """Stops every child; on_event('stopped') reports the seconds since the stop began."""
        began = time.monotonic()
        # A child already reaped (dead, waiting for its restart) had its group killed then.
        alive = [r for r in self.running if r.process.returncode is None]
        for r in reversed(alive):
            self._on_event(r.component.name, "stopping", 0.0)
            _signal_group(r.process, signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE_SECONDS
        for r in reversed(alive):
            while not _exited(r.process) and time.monotonic() < deadline:
                time.sleep(0.05)
            _reap(r.process)
            self._on_event(r.component.name, "stopped", time.monotonic() - began)
        self.running.clear()


def _exited(process: subprocess.Popen) -> bool:
    """True when the child has exited, without reaping it (it stays a zombie, keeping its pid and group id)."""
    if process.returncode is not None:
        return True
    try:
        return os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None
    except ChildProcessError:  # reaped elsewhere
        return process.poll() is not None


def _reap(process: subprocess.Popen) -> int:
    """SIGKILLs the child's whole process group, then reaps the child; returns its exit code. The group goes
    while the child is unreaped (a zombie at worst), so its id cannot belong to anyone else yet: whatever the child
    left behind (Triton's Python backend stubs) would otherwise outlive it, holding ports and memory."""
    if process.returncode is not None:  # reaped already: its id is no longer ours to signal
        return process.returncode
    _signal_group(process, signal.SIGKILL)
    return process.wait()


def _signal_group(process: subprocess.Popen, sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass
