"""`llmaas up` and its supervisor with real components: a taken port is refused before anything starts, and two
Triton replicas run side by side, one of them killed and brought back (its backend stubs killed with it)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest
from llmaas.stack.ports import StackPorts
from llmaas.stack.supervisor import Supervisor
from llmaas.stack.triton import triton_components, triton_ready

from tests.support.ports import free_base_port
from tests.support.stack import E2E_DIR, up_argv

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def test_up_refuses_a_base_port_whose_ports_are_taken(tmp_path):
    base = free_base_port()
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # The stack file of the stack that holds the port (same data directory): it must survive the refusal.
    (data_dir / "stack.json").write_text(json.dumps({"pids": {}}))
    taken = StackPorts(base).service("router")
    with socket.create_server(("127.0.0.1", taken)):
        done = subprocess.run(up_argv(data_dir, base, "--no-jaeger"), capture_output=True, text=True, timeout=60,
                              env={**os.environ, "COLUMNS": "80"})
    output = (done.stdout + done.stderr).strip()
    assert done.returncode == 1, output
    assert len(output.splitlines()) == 1, output
    assert f"port {taken} (router)" in output and "--base-port" in output
    assert "Traceback" not in output
    assert (data_dir / "stack.json").exists() and not (data_dir / "logs").exists()


def _group(pgid: int) -> set[int]:
    """The live processes of a process group (zombies excluded)."""
    members = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z" and int(fields[2]) == pgid:
            members.add(int(stat.parent.name))
    return members


def test_two_triton_replicas_run_side_by_side_and_a_killed_one_comes_back(tmp_path):
    ports = StackPorts(free_base_port())
    restarted = []
    supervisor = Supervisor(tmp_path / "data", on_restart=restarted.append)
    try:
        supervisor.start_stage(triton_components(tmp_path / "data", ports, [E2E_DIR / "model_repository"], None, 2))
        pids = supervisor.pids()
        assert set(pids) == {"triton", "triton-2"}
        assert triton_ready(ports.triton(1).http) and triton_ready(ports.triton(2).http)
        for name in pids:
            assert (tmp_path / "data" / "triton" / name / "backends" / "vllm").is_dir()
        # tritonserver and the Python backend stub of the test model, in the replica's own group.
        group = _group(pids["triton-2"])
        assert len(group) >= 2, group

        os.kill(pids["triton-2"], signal.SIGKILL)
        second = next(r for r in supervisor.running if r.component.name == "triton-2")
        while second.restart_due is None:  # the supervisor notices the death
            assert supervisor.restart_exited() is None
            time.sleep(0.01)
        # The stub quits by itself ~0.3 s after its server is reaped: well before that, the group is gone already.
        noticed = time.monotonic()
        while _group(pids["triton-2"]):
            assert time.monotonic() - noticed < 0.1, "the killed server's backend stub outlived it"
            time.sleep(0.005)
        deadline = time.monotonic() + 10
        while not restarted:
            assert supervisor.restart_exited() is None
            assert time.monotonic() < deadline
            time.sleep(0.05)
        new = supervisor.pids()["triton-2"]
        assert new != pids["triton-2"] and supervisor.pids()["triton"] == pids["triton"]
        deadline = time.monotonic() + 120
        while not triton_ready(ports.triton(2).http):
            assert supervisor.restart_exited() is None
            assert time.monotonic() < deadline, "triton-2 did not come back"
            time.sleep(0.5)
        assert triton_ready(ports.triton(1).http)
    finally:
        supervisor.stop_all()
