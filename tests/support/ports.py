"""Ephemeral port ranges for tests that start real processes."""

from __future__ import annotations

import random
import socket

from llmaas.stack.ports import StackPorts


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_base_port(span: int = StackPorts.SPAN) -> int:
    """A base port with `span` free ports after it, picked at random so parallel runs rarely collide."""
    for _ in range(200):
        base = random.randrange(20000, 60000 - span)
        if all(_free(base + i) for i in range(span)):
            return base
    raise RuntimeError("no free port range found")
