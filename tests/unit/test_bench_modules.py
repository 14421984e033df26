"""Every benchmark under bench/ still imports against the code it measures (bench.guard_rules once imported a module
that had moved, and nothing noticed until someone ran it). Importing runs no benchmark."""

from __future__ import annotations

import importlib
import pkgutil

import pytest

import bench

MODULES = sorted(m.name for m in pkgutil.iter_modules(bench.__path__))


def test_the_benchmarks_are_found():
    assert {"request_path", "guard_rules", "ext_authz"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_each_benchmark_imports(name, monkeypatch):
    monkeypatch.setattr("os.environ", dict(__import__("os").environ))  # a bench may set its own at import
    module = importlib.import_module(f"bench.{name}")
    assert callable(getattr(module, "main", None)) or name == "loadgen", f"bench.{name} has no main()"
