"""python -m llmaas.stack.triton_container: Triton in a container (deploy/docker/triton-cpu.Dockerfile, the Helm
chart's StatefulSet): the same server, backends and flags as the local stack's (llmaas.stack.triton), listening on
every interface of the pod on Triton's usual ports (gRPC 8001, HTTP 8000, metrics 8002). Model repositories:
LLMAAS_TRITON_MODEL_REPOSITORIES (os.pathsep-separated), the repository's own CPU models by default."""

from __future__ import annotations

import os
from pathlib import Path

from llmaas.stack.paths import DEFAULT_MODEL_REPOSITORY
from llmaas.stack.ports import TritonPorts
from llmaas.stack.triton import prepare_backends, triton_argv, triton_env

PORTS = TritonPorts(grpc=8001, http=8000, metrics=8002)


def container_argv(backends_dir: Path, repositories: list[Path], otlp_http_endpoint: str | None) -> list[str]:
    argv = triton_argv(backends_dir, PORTS, repositories, otlp_http_endpoint)
    # Every interface of the pod: the router, the catalog and Prometheus reach it through its Service.
    return [a.replace("-address=127.0.0.1", "-address=0.0.0.0") for a in argv]


def main() -> None:
    backends_dir = Path(os.environ.get("LLMAAS_TRITON_BACKENDS_DIR", "/tmp/triton-backends"))
    repositories = [Path(p) for p in os.environ.get("LLMAAS_TRITON_MODEL_REPOSITORIES",
                                                    str(DEFAULT_MODEL_REPOSITORY)).split(os.pathsep) if p]
    prepare_backends(backends_dir)
    argv = container_argv(backends_dir, repositories, os.environ.get("LLMAAS_TRITON_OTLP_HTTP") or None)
    os.execve(argv[0], argv, {**os.environ, **triton_env()})


if __name__ == "__main__":
    main()
