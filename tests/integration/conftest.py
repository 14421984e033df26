"""Fixtures shared by the integration tests."""

from __future__ import annotations

import pytest
from llmaas.guard.training.train import train


@pytest.fixture(scope="session")
def guard_model_dir(tmp_path_factory):
    """A guard model trained here from the shared data, exactly as `llmaas guard train` does (once per session)."""
    directory = tmp_path_factory.mktemp("guard-model")
    train(directory)
    return directory
