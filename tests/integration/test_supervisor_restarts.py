"""The supervisor keeps the stack alive, with real (tiny) child processes: a dead child comes back with a new pid
after a back-off that grows in a crash loop and resets after a stable run, stack.json follows, leftovers of its
process group are killed first, and a child that keeps dying is given up on. The back-off is shortened here."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import pytest
from llmaas.stack.component import Component
from llmaas.stack.supervisor import RestartPolicy, Running, Supervisor
from llmaas.stack.up import STACK_FILE, update_stack_pids

pytestmark = pytest.mark.integration

FAST = RestartPolicy(max_restarts=4, window=30.0, first_delay=0.1, max_delay=0.4, stable_after=30.0)


def _python(name: str, code: str) -> Component:
    return Component(name=name, argv=[sys.executable, "-c", code])


SLEEPER = "import time; time.sleep(60)"


def _gone(pid: int) -> bool:
    """No such process, or a zombie nobody reaped yet (the process has exited all the same)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


class Recorder:
    def __init__(self) -> None:
        self.events: list[tuple[float, str, str, float]] = []
        self.restarted: list[Running] = []

    def event(self, component: str, event: str, seconds: float) -> None:
        self.events.append((time.monotonic(), component, event, seconds))

    def named(self, prefix: str) -> list[tuple[float, str, str, float]]:
        return [e for e in self.events if e[2].startswith(prefix)]


@pytest.fixture
def recorder():
    return Recorder()


def _supervisor(tmp_path: Path, recorder: Recorder, policy: RestartPolicy = FAST, on_restart=None) -> Supervisor:
    return Supervisor(tmp_path, on_event=recorder.event, policy=policy,
                      on_restart=on_restart or recorder.restarted.append)


def _watch_until(supervisor: Supervisor, done, timeout: float = 3.0) -> Running | None:
    """Calls restart_exited as `llmaas up` does until done() or a child is given up on; no call may block."""
    deadline = time.monotonic() + timeout
    while not done():
        began = time.monotonic()
        failing = supervisor.restart_exited()
        assert time.monotonic() - began < 0.5, "restart_exited blocked"
        if failing is not None:
            return failing
        assert time.monotonic() < deadline, "timed out watching the children"
        time.sleep(0.02)
    return None


def _wait_gone(pid: int, timeout: float = 1.0) -> bool:
    deadline = time.monotonic() + timeout
    while not _gone(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_killed_child_comes_back_with_a_new_pid_and_the_stack_file_follows(tmp_path, recorder):
    supervisor = _supervisor(tmp_path, recorder,
                             on_restart=lambda r: (recorder.restarted.append(r),
                                                   update_stack_pids(tmp_path, supervisor.pids())))
    try:
        supervisor.start_stage([_python("worker", SLEEPER), _python("other", SLEEPER)])
        stack_file = tmp_path / STACK_FILE
        stack_file.write_text(json.dumps({"api_key": "kept", "pids": supervisor.pids()}))
        stack_file.chmod(0o600)
        old, other = supervisor.pids()["worker"], supervisor.pids()["other"]
        os.kill(old, signal.SIGKILL)
        assert _watch_until(supervisor, lambda: bool(recorder.restarted)) is None
        new = supervisor.pids()["worker"]
        assert new != old and not _gone(new) and supervisor.pids()["other"] == other
        assert [r.process.pid for r in recorder.restarted] == [new]
        assert [e[1:3] for e in recorder.named("exited")] == [("worker", "exited (signal SIGKILL), restart in 0.1s")]
        assert json.loads(stack_file.read_text()) == {"api_key": "kept", "pids": {"worker": new, "other": other}}
        assert stack_file.stat().st_mode & 0o777 == 0o600
        assert [r.component.name for r in supervisor.running] == ["worker", "other"]  # the stop order is kept
    finally:
        supervisor.stop_all()
    assert _gone(new) and _gone(other)


def test_a_crash_loop_backs_off_doubling_up_to_the_cap_then_is_given_up(tmp_path, recorder):
    supervisor = _supervisor(tmp_path, recorder)
    # Alive long enough to pass its (instant) readiness check, then exits with code 3, again and again.
    crasher = _python("crasher", "import sys, time; time.sleep(0.1); sys.exit(3)")
    try:
        supervisor.start_stage([crasher, _python("bystander", SLEEPER)])
        failing = _watch_until(supervisor, lambda: False, timeout=5.0)
        assert failing is not None and failing.component.name == "crasher"
        assert failing.log_path == tmp_path / "logs" / "crasher.log"
        exits = recorder.named("exited")
        assert [e[3] for e in exits[:-1]] == [0.1, 0.2, 0.4, 0.4]  # doubled, capped at max_delay
        assert exits[-1][2] == "exited (code 3), giving up" and all(e[1] == "crasher" for e in exits)
        # Each restart waited for its back-off (the next 'starting' of the crasher came that late or later).
        starts = [e[0] for e in recorder.named("starting") if e[1] == "crasher"][1:]
        assert all(start - exited[0] >= exited[3] - 0.01 for start, exited in zip(starts, exits, strict=False))
        assert not _gone(supervisor.pids()["bystander"])
    finally:
        supervisor.stop_all()


def test_a_child_that_stayed_up_has_its_back_off_reset(tmp_path, recorder):
    policy = RestartPolicy(max_restarts=10, window=30.0, first_delay=0.1, max_delay=2.0, stable_after=0.3)
    supervisor = _supervisor(tmp_path, recorder, policy)
    lifetime = tmp_path / "lifetime"  # how long each run of the child lives, read at its start
    lifetime.write_text("0.4")
    try:
        supervisor.start_stage([_python("steady", "import pathlib, sys, time; "
                                         f"time.sleep(float(pathlib.Path({str(lifetime)!r}).read_text())); "
                                         "sys.exit(1)")])
        _watch_until(supervisor, lambda: len(recorder.named("exited")) == 2, timeout=4.0)
        lifetime.write_text("0")  # the next runs crash at once (the next start is 0.1 s away)
        _watch_until(supervisor, lambda: len(recorder.named("exited")) == 4)
        # Two stable runs: each restarted after first_delay; then quick crashes double it again.
        assert [e[3] for e in recorder.named("exited")] == [0.1, 0.1, 0.2, 0.4]
    finally:
        supervisor.stop_all()


def test_leftovers_of_a_dead_childs_group_are_killed_before_it_is_restarted(tmp_path, recorder):
    supervisor = _supervisor(tmp_path, recorder)
    pid_file = tmp_path / "grandchild.pid"
    # Like tritonserver and its Python backend stubs: a grandchild in the same process group, which outlives its
    # parent's SIGKILL unless someone kills the group.
    parent = ("import subprocess, sys, time\n"
              "child = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
              f"open({str(pid_file)!r} + '.tmp', 'w').write(str(child.pid))\n"
              f"import os; os.replace({str(pid_file)!r} + '.tmp', {str(pid_file)!r})\n"
              "time.sleep(60)\n")
    try:
        supervisor.start_stage([Component(name="server", argv=[sys.executable, "-c", parent],
                                          ready=pid_file.exists, prepare=lambda: pid_file.unlink(missing_ok=True))])
        grandchild = int(pid_file.read_text())
        assert not _gone(grandchild)
        os.kill(supervisor.pids()["server"], signal.SIGKILL)
        time.sleep(0.2)
        assert not _gone(grandchild), "the grandchild outlives its parent by itself"
        supervisor.restart_exited()  # notices the death: the group goes at once, the restart is only scheduled
        assert _wait_gone(grandchild)
        assert not recorder.restarted
        _watch_until(supervisor, lambda: bool(recorder.restarted))
    finally:
        supervisor.stop_all()


def test_the_watch_never_waits_for_a_back_off_and_stop_all_handles_a_child_waiting_for_it(tmp_path, recorder):
    policy = RestartPolicy(max_restarts=4, window=30.0, first_delay=0.6, max_delay=1.0, stable_after=30.0)
    supervisor = _supervisor(tmp_path, recorder, policy)
    try:
        supervisor.start_stage([_python("a", SLEEPER), _python("b", SLEEPER)])
        a = supervisor.pids()["a"]
        os.kill(a, signal.SIGKILL)
        _watch_until(supervisor, lambda: bool(recorder.named("exited")))
        killed_at = time.monotonic()
        b = supervisor.pids()["b"]
        os.kill(b, signal.SIGKILL)  # noticed while a's restart is pending
        _watch_until(supervisor, lambda: len(recorder.named("exited")) == 2)
        assert time.monotonic() - killed_at < 0.3
        assert supervisor.pids() == {"a": a, "b": b} and not recorder.restarted
        _watch_until(supervisor, lambda: len(recorder.restarted) == 2)
        assert set(supervisor.pids()) == {"a", "b"} and a not in supervisor.pids().values()
        os.kill(supervisor.pids()["a"], signal.SIGKILL)
        _watch_until(supervisor, lambda: len(recorder.named("exited")) == 3)
    finally:
        supervisor.stop_all()  # 'a' waits for its restart: nothing to signal, nothing raised
    assert supervisor.running == []
    assert [e[1] for e in recorder.named("stopped")] == ["b"]
