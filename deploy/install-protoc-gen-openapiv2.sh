#!/usr/bin/env bash
# Installs grpc-gateway's protoc-gen-openapiv2 as $(go env GOPATH)/bin/protoc-gen-openapiv2-<version>: the protoc
# plugin protos/generate.sh runs to write the public OpenAPI description (gateway/openapi.yaml) from the protos'
# google.api.http annotations. Versioned name, so that a plugin of another version is never picked up from PATH.
# Go's module and build caches keep a reinstall cheap (~1 min cold). Idempotent.
set -euo pipefail

VERSION=v2.34.0

module=github.com/grpc-ecosystem/grpc-gateway/v2
# GOPATH may be a list; `go install` also uses its first entry.
gopath_first="$(go env GOPATH | cut -d: -f1)"
out="$gopath_first/bin/protoc-gen-openapiv2-$VERSION"

if [[ -x "$out" ]] && "$out" --version 2>/dev/null | grep -q "Version $VERSION"; then
  echo "protoc-gen-openapiv2 $VERSION already installed: $out"
  exit 0
fi

SECONDS=0
# Built to a temporary directory so an interrupted build never leaves a binary that looks installed.
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOBIN="$tmp" go install "$module/protoc-gen-openapiv2@$VERSION"
"$tmp/protoc-gen-openapiv2" --version | grep -q "Version $VERSION"
mkdir -p "$(dirname "$out")"
mv -f "$tmp/protoc-gen-openapiv2" "$out"
echo "built $out in ${SECONDS}s"
