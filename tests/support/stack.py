"""Runs `llmaas up` as a real child process for e2e tests and benchmarks, and stops it cleanly."""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from llmaas.stack.paths import DEFAULT_CATALOG, DEFAULT_MODEL_REPOSITORY, REFERENCE_CATALOG, REPO_ROOT
from llmaas.stack.ports import StackPorts
from llmaas.stack.up import STACK_FILE

from tests.support.ports import free_base_port

E2E_DIR = REPO_ROOT / "tests" / "e2e"
TEST_MODEL = "llmaas-test:deterministic"
REAL_MODEL = "smollm2:135m"
# Served by the deterministic model, with an end of support 30 days from today: always in its notice period.
SUNSETTING_MODEL = "llmaas-test:sunsetting"
# Past its end of support (30 days ago) and not served; its migration is the deterministic model, which serves it
# for tenants that opted in.
RETIRED_MODEL = "llmaas-test:retired"
# Served by the deterministic model, in production; tests/e2e/test_successor.py moves its end of support into the
# past (rewriting the overlay: stack["lifecycle_catalog"]) to see the change reach the router at once.
FLIP_MODEL = "llmaas-test:flip"


def lifecycle_catalog_text(flip_end_of_support: dt.date | None = None) -> str:
    today = dt.date.today()
    template = DEFAULT_CATALOG.parent / "chat_templates" / "smollm2.jinja"
    served = (f"licence: Apache-2.0, max_model_len: 4096, default_max_tokens: 64, triton_model: "
              f"llmaas-test-deterministic, pool: local-cpu, chat_template: '{template}', bos_token: '<|im_start|>',"
              f" eos_token: '<|im_end|>'")
    flip_end = f" end_of_support: {flip_end_of_support.isoformat()}," if flip_end_of_support else ""
    return (
        f"models:\n  - {{id: '{SUNSETTING_MODEL}', editor: llmaas tests, type: chat, production_date: 2026-01-01,"
        f" end_of_support: {(today + dt.timedelta(days=30)).isoformat()}, migration: '{TEST_MODEL}', {served}}}\n"
        f"  - {{id: '{RETIRED_MODEL}', editor: llmaas tests, type: chat, production_date: 2025-01-01,"
        f" end_of_support: {(today - dt.timedelta(days=30)).isoformat()}, migration: '{TEST_MODEL}'}}\n"
        f"  - {{id: '{FLIP_MODEL}', editor: llmaas tests, type: chat, production_date: 2025-01-01,{flip_end}"
        f" {served}}}\n")


def _lifecycle_catalog(path: Path) -> Path:
    path.write_text(lifecycle_catalog_text())
    return path


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def up_argv(data_dir: Path, base_port: int, *options: str) -> list[str]:
    """`llmaas up` as the tests run it (the interpreter of this venv); options: more `llmaas up` options."""
    return [sys.executable, "-m", "llmaas.cli", "up", "--data-dir", str(data_dir), "--base-port", str(base_port),
            *options]


def live_pids(stack: dict) -> dict[str, int]:
    """The stack's process ids now: `llmaas up` rewrites stack.json whenever it restarts a component."""
    return json.loads((Path(stack["data_dir"]) / STACK_FILE).read_text())["pids"]


# Every client library of the tests verifies the edge's certificate against the CAs of the stacks this process
# started: httpx (and so the OpenAI SDK) and urllib read SSL_CERT_FILE, requests (schemathesis) REQUESTS_CA_BUNDLE
# (gRPC reads its default roots once: `gateway_channel` gives them). One bundle, since several stacks (each with its
# own CA) can run at once.
CA_ENVIRONMENT = ("SSL_CERT_FILE", "REQUESTS_CA_BUNDLE")
_ca_bundle: Path | None = None


def trust_stack_ca(stack: dict) -> None:
    """Adds the stack's CA to this process's trusted CAs (nothing for a plain HTTP stack)."""
    global _ca_bundle
    if not stack.get("ca_file"):
        return
    if _ca_bundle is None:
        fd, name = tempfile.mkstemp(prefix="llmaas-test-ca-", suffix=".pem")
        os.close(fd)
        _ca_bundle = Path(name)
        atexit.register(_ca_bundle.unlink, missing_ok=True)
    with _ca_bundle.open("a") as bundle:
        bundle.write(Path(stack["ca_file"]).read_text())
    for variable in CA_ENVIRONMENT:
        os.environ[variable] = str(_ca_bundle)


def gateway_channel(stack: dict):
    """A gRPC channel to the edge's port (HTTP/2 over TLS, verified against the stack's CA, or plain)."""
    import grpc

    target = stack["base_url"].split("://", 1)[1].removesuffix("/v1")
    if not stack.get("ca_file"):
        return grpc.insecure_channel(target)
    return grpc.secure_channel(target, grpc.ssl_channel_credentials(Path(stack["ca_file"]).read_bytes()))


@contextmanager
def running_stack(data_dir: Path, *options: str, start_timeout: float = 240.0,
                  env: dict[str, str] | None = None) -> Iterator[dict]:
    """options: more `llmaas up` options; env: more environment variables for it (and the processes it starts)."""
    base = free_base_port()
    lifecycle_catalog = _lifecycle_catalog(data_dir.parent / f"{data_dir.name}-lifecycle.yaml")
    argv = up_argv(data_dir, base,
                   "--model-repository", str(DEFAULT_MODEL_REPOSITORY),
                   "--model-repository", str(E2E_DIR / "model_repository"),
                   "--catalog", str(DEFAULT_CATALOG), "--catalog", str(REFERENCE_CATALOG),
                   "--catalog", str(E2E_DIR / "catalog.yaml"),
                   "--catalog", str(lifecycle_catalog), *options)
    log = open(data_dir.parent / f"{data_dir.name}-up.log", "wb")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "COLUMNS": "200", **(env or {})})
    stack_file = data_dir / STACK_FILE
    try:
        deadline = time.monotonic() + start_timeout
        while not stack_file.exists():
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                raise RuntimeError("llmaas up did not start:\n" + Path(log.name).read_text()[-4000:])
            time.sleep(0.3)
        stack = json.loads(stack_file.read_text())
        stack["base_port"] = base
        stack["data_dir"] = str(data_dir)
        stack["lifecycle_catalog"] = str(lifecycle_catalog)
        trust_stack_ca(stack)
        yield stack
    finally:
        proc.send_signal(signal.SIGINT)  # what Ctrl-C does
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        log.close()
        leftover = [p for p in range(base, base + StackPorts.SPAN) if _port_open(p)]
        assert not leftover, f"ports still open after stop: {leftover}"
