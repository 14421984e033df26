"""What the supervisor needs to know to run one component of the stack as a child process."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Component:
    name: str
    argv: list[str]
    # Added to (and overriding) the supervisor's own environment.
    env: dict[str, str] = field(default_factory=dict)
    # Called repeatedly (every ~0.2 s) after start until it returns True; must not raise on "not yet".
    ready: Callable[[], bool] = lambda: True
    # Seconds to wait for `ready` before the stack start is declared failed.
    ready_timeout: float = 60.0
    # Run once before the process starts (create directories, copy files, ...).
    prepare: Callable[[], None] | None = None
    cwd: Path | None = None
