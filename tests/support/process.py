"""One stack component as a real process for an integration test, run by the stack's own supervisor."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmaas.stack.component import Component
from llmaas.stack.supervisor import Supervisor


@contextmanager
def running_component(component: Component, data_dir: Path) -> Iterator[subprocess.Popen]:
    """Starts it (prepare, spawn, wait for ready; StartError carries the log tail), yields the process, stops it
    the way `llmaas up` does (SIGTERM to the group, then SIGKILL). Its output is in data_dir/logs/<name>.log."""
    supervisor = Supervisor(data_dir)
    try:
        supervisor.start_stage([component])
        yield supervisor.running[0].process
    finally:
        supervisor.stop_all()
