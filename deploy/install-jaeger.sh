#!/usr/bin/env bash
# Installs the Jaeger v2 binary used by the local stack as $(go env GOPATH)/bin/jaeger-<version>.
#
# `go install github.com/jaegertracing/jaeger/cmd/jaeger@<version>` is refused because Jaeger's go.mod
# carries a replace directive, so we build inside the module cache instead. Go's module and build
# caches keep a rebuild cheap (CI should cache $(go env GOMODCACHE) and $(go env GOCACHE)).
# Idempotent: does nothing when the binary is already there and runs.
set -euo pipefail

JAEGER_VERSION=v1.76.0

module=github.com/jaegertracing/jaeger
# GOPATH may be a list; `go install` also uses its first entry.
gopath_first="$(go env GOPATH | cut -d: -f1)"
out="$gopath_first/bin/jaeger-$JAEGER_VERSION"

if [[ -x "$out" ]] && "$out" --help >/dev/null 2>&1; then
  echo "jaeger $JAEGER_VERSION already installed: $out"
  exit 0
fi

SECONDS=0
go mod download "$module@$JAEGER_VERSION"
src="$(go env GOMODCACHE)/$module@$JAEGER_VERSION"
mkdir -p "$(dirname "$out")"
# Build to a temporary name so an interrupted build never leaves a binary that looks installed.
tmp="$out.tmp.$$"
trap 'rm -f "$tmp"' EXIT
(cd "$src" && go build -o "$tmp" ./cmd/jaeger)
"$tmp" --help >/dev/null
mv -f "$tmp" "$out"
echo "built $out in ${SECONDS}s"
