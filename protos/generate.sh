#!/usr/bin/env bash
# Regenerates everything derived from protos/: Python messages, stubs and type hints under services/, the
# descriptor set Envoy's transcoder loads (gateway/llmaas.pb) and the public OpenAPI description (gateway/openapi.yaml).
# Lints first. CI runs it and fails on a diff.
# Usage: bash protos/generate.sh   (inside the project's venv; the OpenAPI plugin comes from deploy/setup.sh)
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

# The public OpenAPI description: grpc-gateway's protoc-gen-openapiv2 (deploy/install-protoc-gen-openapiv2.sh) sees
# only the methods with a google.api.http binding, i.e. what Envoy transcodes; field names as on the wire (proto names),
# one merged file. llmaas.stack.openapi then says what the plugin cannot know (OpenAI's error shape, the chat
# response behind its HttpBody stream, the bearer key, the integers' ranges from the descriptor set) in OpenAPI 3.1; it
# reads the typed chat response from a second run that includes the unbound methods.
openapiv2_version=$(sed -n 's/^VERSION=//p' deploy/install-protoc-gen-openapiv2.sh)
openapiv2="$(go env GOPATH 2>/dev/null | cut -d: -f1)/bin/protoc-gen-openapiv2-$openapiv2_version"
if [[ ! -x "$openapiv2" ]]; then
  echo "protoc-gen-openapiv2 $openapiv2_version not found: run bash deploy/setup.sh (needs Go)" >&2
  exit 1
fi
rm -rf build/openapi && mkdir -p build/openapi
for unbound in false true; do
  python -m grpc_tools.protoc -I protos -I build/proto-deps --plugin=protoc-gen-openapiv2="$openapiv2" \
    --openapiv2_out=build/openapi --openapiv2_opt=allow_merge=true,merge_file_name=unbound-$unbound,output_format=yaml \
    --openapiv2_opt=json_names_for_fields=false,openapi_naming_strategy=fqn,disable_default_errors=true \
    --openapiv2_opt=omit_array_item_type_when_ref_sibling=true,ignore_go_package_option=true \
    --openapiv2_opt=generate_unbound_methods=$unbound "${sources[@]}"
done
python -m llmaas.stack.openapi build/openapi/unbound-{false,true}.swagger.yaml gateway/llmaas.pb gateway/openapi.yaml
echo "generated: ${#sources[@]} protos -> services/llmaas/*/v1, gateway/llmaas.pb, gateway/openapi.yaml"
