"""Launch of NVIDIA Triton (the `tritonserver` shipped in the nvidia-pytriton wheel) for the local stack.

Triton runs our CPU `vllm` backend (deploy/triton/backends/vllm), a Python-based backend built on Triton's Python
backend, so the model repositories are the same files production serves with the real vLLM backend on GPUs.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sys
import sysconfig
import urllib.request
from pathlib import Path

from .component import Component
from .ports import StackPorts, TritonPorts

# The CPU backend's sources in this repository (services/llmaas/stack/triton.py -> repository root).
_REPO_ROOT = Path(__file__).resolve().parents[3]
BACKEND_SOURCE_ENV = "LLMAAS_TRITON_BACKEND_SRC"
# How often Triton's batch span processor exports (its default, 5 s, makes traces lag behind the test/demo).
TRACE_EXPORT_DELAY_MS = 500
# Seconds Triton may take to load every model of its repositories.
TRITON_READY_TIMEOUT = 120.0


def _pytriton_dir() -> Path:
    # find_spec does not import pytriton (which would pull in its whole client stack).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nvidia-pytriton is not installed: it provides the tritonserver binary")
    return Path(next(iter(spec.submodule_search_locations)))


def find_tritonserver() -> Path:
    """The tritonserver executable bundled in the nvidia-pytriton wheel."""
    path = _pytriton_dir() / "tritonserver" / "bin" / "tritonserver"
    if not path.is_file():
        raise FileNotFoundError(f"tritonserver not found at {path}")
    return path


def backend_source_dir() -> Path:
    """Where our `vllm` backend's model.py lives (overridable for installed, non-checkout use)."""
    return Path(os.environ.get(BACKEND_SOURCE_ENV) or _REPO_ROOT / "deploy" / "triton" / "backends" / "vllm")


def _pytriton_libs() -> Path:
    # The wheel's bundled shared libraries (libtritonserver, libb64, ...) sit next to the package.
    return _pytriton_dir().parent / "nvidia_pytriton.libs"


def prepare_backends(backends_dir: Path) -> None:
    """Builds Triton's --backend-directory: `python/` (copied from the wheel) and our `vllm/` backend."""
    server = _pytriton_dir() / "tritonserver"
    stub = server / "python_backend_stubs" / f"{sys.version_info.major}.{sys.version_info.minor}" \
        / "triton_python_backend_stub"
    if not stub.is_file():
        raise FileNotFoundError(f"no Triton Python backend stub for Python {sys.version_info[:2]}: {stub}")
    python_dir = backends_dir / "python"
    vllm_dir = backends_dir / "vllm"
    # Rebuilt each time so an edit of the backend (or a removed file) is never shadowed by a stale copy.
    for d in (python_dir, vllm_dir):
        shutil.rmtree(d, ignore_errors=True)
    python_dir.mkdir(parents=True)
    # Copies, not symlinks: a Python-based backend resolves its stub and library next to the real files.
    for src in (server / "backends" / "python" / "libtriton_python.so",
                server / "backends" / "python" / "triton_python_backend_utils.py", stub):
        shutil.copy2(src, python_dir / src.name)
    shutil.copytree(backend_source_dir(), vllm_dir, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))


def triton_argv(backends_dir: Path, ports: TritonPorts, model_repositories: list[Path],
                otlp_http_endpoint: str | None) -> list[str]:
    argv = [str(find_tritonserver())]
    argv += [f"--model-repository={Path(r).resolve()}" for r in model_repositories]
    argv += [
        f"--backend-directory={backends_dir}",
        # Loopback only: Envoy and the services are the way in.
        "--grpc-address=127.0.0.1", f"--grpc-port={ports.grpc}",
        "--http-address=127.0.0.1", f"--http-port={ports.http}", "--allow-http=true",
        "--metrics-address=127.0.0.1", f"--metrics-port={ports.metrics}", "--allow-metrics=true",
        "--allow-gpu-metrics=false",
        # Explicit control, all models loaded at start: the catalog can still load/unload at run time.
        "--model-control-mode=explicit", "--load-model=*",
        "--strict-readiness=true", "--exit-on-error=true",
        # No CUDA here: skip the pinned-memory attempt, and do not wait 30 s for streams on shutdown.
        "--pinned-memory-pool-byte-size=0", "--exit-timeout-secs=5",
        "--log-verbose=0",
    ]
    if otlp_http_endpoint:
        endpoint = otlp_http_endpoint.rstrip("/")
        argv += [
            "--trace-config=mode=opentelemetry",
            f"--trace-config=opentelemetry,url={endpoint}/v1/traces",
            "--trace-config=opentelemetry,resource=service.name=triton",
            f"--trace-config=opentelemetry,bsp_schedule_delay={TRACE_EXPORT_DELAY_MS}",
            # Rate 0: Triton never starts a trace of its own. It still traces every request that carries a W3C
            # `traceparent` (whatever its sampled flag: verified on 2.51, tests/integration/
            # test_triton_trace_sampling.py), and the router sends one only for a sampled request
            # (llmaas.common.grpc_tracing.sampled_trace_headers): Triton follows the edge's sampling decision.
            "--trace-config=rate=0",
            "--trace-config=level=TIMESTAMPS",
        ]
    return argv


def triton_env() -> dict[str, str]:
    """LD_LIBRARY_PATH and PATH for tritonserver and the Python backend stubs it starts."""
    # The stub must load *this* interpreter's libpython (not the system's), and the wheel's own libraries.
    lib_dirs = [sysconfig.get_config_var("LIBDIR"), str(_pytriton_libs())]
    if os.environ.get("LD_LIBRARY_PATH"):
        lib_dirs.append(os.environ["LD_LIBRARY_PATH"])
    # The stub runs `python3` from PATH (it ignores PYTHONPATH): the venv's interpreter must come first.
    path = [str(Path(sys.executable).parent)]
    if os.environ.get("PATH"):
        path.append(os.environ["PATH"])
    return {"LD_LIBRARY_PATH": os.pathsep.join(d for d in lib_dirs if d), "PATH": os.pathsep.join(path)}


def _http_json(url: str, body: bytes | None = None) -> tuple[int, object]:
    request = urllib.request.Request(url, data=body, method="POST" if body is not None else "GET")
    with urllib.request.urlopen(request, timeout=2) as response:
        raw = response.read()
        return response.status, (json.loads(raw) if raw else None)


def triton_ready(http_port: int) -> bool:
    """True when the server is ready and every model of its repositories is READY. Never raises."""
    base = f"http://127.0.0.1:{http_port}/v2"
    try:
        status, _ = _http_json(f"{base}/health/ready")
        if status != 200:
            return False
        _, index = _http_json(f"{base}/repository/index", b"{}")
        return bool(index) and all(model.get("state") == "READY" for model in index)
    except Exception:  # noqa: BLE001 - "not yet" (refused, 400 while loading, timeout, ...)
        return False


def triton_name(index: int) -> str:
    """Component name of Triton replica `index`: triton, triton-2, triton-3, ..."""
    return "triton" if index == 1 else f"triton-{index}"


def triton_component(data_dir: Path, ports: StackPorts, model_repositories: list[Path],
                     otlp_http_endpoint: str | None, index: int = 1) -> Component:
    """Triton replica `index` (1, the main one, by default) on its own ports (StackPorts.triton)."""
    name = triton_name(index)
    replica_ports = ports.triton(index)
    # One directory per replica: prepare_backends wipes and rebuilds it (at every restart too), which must not pull
    # the files from under another replica's running backend stubs.
    backends_dir = Path(data_dir).resolve() / "triton" / name / "backends"
    return Component(
        name=name,
        argv=triton_argv(backends_dir, replica_ports, model_repositories, otlp_http_endpoint),
        env=triton_env(),
        ready=lambda: triton_ready(replica_ports.http),
        ready_timeout=TRITON_READY_TIMEOUT,
        prepare=lambda: prepare_backends(backends_dir),
    )


def triton_components(data_dir: Path, ports: StackPorts, model_repositories: list[Path],
                      otlp_http_endpoint: str | None, replicas: int) -> list[Component]:
    """`replicas` Triton servers on the same model repositories, each on its own ports and backends directory."""
    return [triton_component(data_dir, ports, model_repositories, otlp_http_endpoint, index)
            for index in range(1, replicas + 1)]
