"""Configuration from environment variables, parsed once; a missing or invalid value stops the service at start."""

from __future__ import annotations

import os


class ConfigError(SystemExit):
    def __init__(self, message: str) -> None:
        super().__init__(f"configuration error: {message}")


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name, default)
    if value is None or value == "":
        raise ConfigError(f"{name} is required")
    return value


def env_int(name: str, default: int | None = None) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        if default is None:
            raise ConfigError(f"{name} is required")
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {raw!r}") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {raw!r}") from None


def grpc_port(default: int | None = None) -> int:
    """Every service listens on LLMAAS_GRPC_PORT."""
    return env_int("LLMAAS_GRPC_PORT", default)


def internal_secret() -> str:
    """The stack's internal signing secret (identity headers, sealed secrets), shared by every service."""
    value = env_str("LLMAAS_INTERNAL_SECRET")
    if len(value) < 32:
        raise ConfigError("LLMAAS_INTERNAL_SECRET must be at least 32 characters")
    return value
