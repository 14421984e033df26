#!/usr/bin/env bash
# Regenerates everything derived from protos/: Python messages, stubs and type hints under services/, and the
# descriptor set Envoy's transcoder loads (gateway/llmaas.pb). Lints first. CI runs it and fails on a diff.
# Usage: bash protos/generate.sh   (inside the project's venv)
set -euo pipefail
cd "$(dirname "$0")/.."

# The google/api protos come from the pinned googleapis-common-protos wheel (buf.build is out of reach here).
gapi=$(python -c 'import google.api, os; print(os.path.dirname(google.api.__file__))')
rm -rf build/proto-deps && mkdir -p build/proto-deps/google/api
cp "$gapi"/{annotations,http,httpbody}.proto build/proto-deps/google/api/

buf lint
buf format --diff --exit-code

mapfile -t sources < <(cd protos && find llmaas -name '*.proto' | sort)
find services/llmaas -path '*/v1/*_pb2*.py*' -delete
python -m grpc_tools.protoc -I protos -I build/proto-deps \
  --python_out=services --pyi_out=services --grpc_python_out=services "${sources[@]}"
for f in "${sources[@]}"; do
  d=services/$(dirname "$f")
  touch "$d/__init__.py" "$(dirname "$d")/__init__.py"
done
python -m grpc_tools.protoc -I protos -I build/proto-deps --include_imports --include_source_info \
  --descriptor_set_out=gateway/llmaas.pb "${sources[@]}"
echo "generated: ${#sources[@]} protos -> services/llmaas/*/v1, gateway/llmaas.pb"
