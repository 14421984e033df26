"""Collecting unit tests of a store again in another module, where `database_url` covers SQLite and PostgreSQL."""

from __future__ import annotations

from types import ModuleType


def recollect(namespace: dict, modules: dict[ModuleType, tuple[str, ...]]) -> None:
    """Copies each module's tests, and the named fixtures that build its store on `database_url`, into namespace
    (a test module's globals()): pytest collects them there, and their fixtures resolve `database_url` from there."""
    for module, fixtures in modules.items():
        for name, obj in vars(module).items():
            if name.startswith("test_") or name in fixtures:
                assert name not in namespace, f"{name} is defined twice in {namespace['__name__']}"
                namespace[name] = obj
