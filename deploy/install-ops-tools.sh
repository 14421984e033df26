#!/usr/bin/env bash
# Installs the operations checkers CI runs on deploy/ (promtool for the Prometheus rules, helm for the chart, docker
# compose for the compose file) as $(go env GOPATH)/bin/<tool>-<version>, built from the Go module proxy. Versioned
# names: a binary of another version is never picked up from PATH. Installed once per machine: later runs find them
# and take no time. The first build is the slow one: on the 2-core development machine, shared with other work, promtool
# took 40 min (before remove_all_sd), helm 19 min, docker compose 7 min (its dependencies already in Go's caches);
# an idle machine takes a fraction of that. Idempotent.
# Usage: bash deploy/install-ops-tools.sh [promtool|helm|compose ...]   (all three by default)
set -euo pipefail

PROMTOOL_VERSION=v0.316.0
HELM_VERSION=v4.3.2
COMPOSE_VERSION=v5.6.0

gopath_first="$(go env GOPATH | cut -d: -f1)"
bin="$gopath_first/bin"
mkdir -p "$bin"

install() {  # name version package [build tags]
  local name=$1 version=$2 package=$3 tags=${4:-}
  local out="$bin/$name-$version"
  if [[ -x "$out" ]]; then
    echo "$name $version already installed: $out"
    return
  fi
  SECONDS=0
  # Built to a temporary directory so an interrupted build never leaves a binary that looks installed.
  local tmp
  tmp="$(mktemp -d)"
  GOBIN="$tmp" go install ${tags:+-tags "$tags"} "$package@$version"
  mv -f "$tmp"/* "$out"  # the one binary built, whatever go named it
  rm -rf "$tmp"
  echo "built $out in ${SECONDS}s"
}

install_in_module() {  # name version package exclude...: for a module whose go.mod has exclude directives, which
  # `go install pkg@version` refuses: built inside a throwaway module that repeats them.
  local name=$1 version=$2 package=$3
  shift 3
  local out="$bin/$name-$version"
  if [[ -x "$out" ]]; then
    echo "$name $version already installed: $out"
    return
  fi
  SECONDS=0
  local tmp
  tmp="$(mktemp -d)"
  (
    cd "$tmp"
    go mod init llmaas.local/ops-tools >/dev/null 2>&1
    for excluded in "$@"; do go mod edit -exclude="$excluded"; done
    go get "$package@$version"
    go build -o "$tmp/bin" "$package"
  )
  mv -f "$tmp/bin" "$out"
  rm -rf "$tmp"
  echo "built $out in ${SECONDS}s"
}

tools=("$@")
[[ ${#tools[@]} -gt 0 ]] || tools=(promtool helm compose)
for tool in "${tools[@]}"; do
  case $tool in
    # Without the cloud service discoveries (file and http SD stay): a third of the build, and the rules and config
    # checks need none of them.
    promtool) install promtool "$PROMTOOL_VERSION" github.com/prometheus/prometheus/cmd/promtool remove_all_sd ;;
    helm) install helm "$HELM_VERSION" helm.sh/helm/v4/cmd/helm ;;
    # docker/compose's CLI plugin: run on its own it is `docker compose` (config needs no Docker engine).
    # Its go.mod excludes two versions (for kustomize's dependencies): repeated in the throwaway module.
    compose) install_in_module docker-compose "$COMPOSE_VERSION" github.com/docker/compose/v5/cmd \
               github.com/davecgh/go-spew@v1.1.2-0.20180830191138-d8f796af33cc \
               github.com/pmezard/go-difflib@v1.0.1-0.20181226105442-5d4384ee4fb2 ;;
    *) echo "unknown tool $tool" >&2; exit 2 ;;
  esac
done
