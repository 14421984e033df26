#!/usr/bin/env bash
# Installs the operations checkers CI runs on deploy/ (promtool for the Prometheus rules, helm for the chart, docker
# compose for the compose file) as $(go env GOPATH)/bin/<tool>-<version>, built with `go install` from the Go module
# proxy. Versioned names: a binary of another version is never picked up from PATH. Go's module and build caches keep
# a reinstall cheap; the first build is the slow one (minutes each). Idempotent.
# Usage: bash deploy/install-ops-tools.sh [promtool|helm|compose ...]   (all three by default)
set -euo pipefail

PROMTOOL_VERSION=v0.316.0
HELM_VERSION=v4.3.2
COMPOSE_VERSION=v5.6.0

gopath_first="$(go env GOPATH | cut -d: -f1)"
bin="$gopath_first/bin"
mkdir -p "$bin"

install() {  # name version package
  local name=$1 version=$2 package=$3
  local out="$bin/$name-$version"
  if [[ -x "$out" ]]; then
    echo "$name $version already installed: $out"
    return
  fi
  SECONDS=0
  # Built to a temporary directory so an interrupted build never leaves a binary that looks installed.
  local tmp
  tmp="$(mktemp -d)"
  GOBIN="$tmp" GOFLAGS=-mod=mod go install "$package@$version"
  mv -f "$tmp"/* "$out"  # the one binary built, whatever go named it
  rm -rf "$tmp"
  echo "built $out in ${SECONDS}s"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(promtool helm compose)
for tool in "${tools[@]}"; do
  case $tool in
    promtool) install promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool ;;
    helm) install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm ;;
    # docker/compose's CLI plugin: run on its own it is `docker compose` (config needs no Docker engine).
    compose) install docker-compose "$COMPOSE_VERSION" github.com/docker/compose/v5/cmd ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
