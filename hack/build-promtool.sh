#!/usr/bin/env bash
# Build (or reuse from cache) Prometheus' promtool from the Go module proxy.
#
#   hack/build-promtool.sh                          -> prints promtool's path on stdout (last line)
#   PROMETHEUS_MODULE_VERSION=v0.315.1 hack/build-promtool.sh
#
# Output: $AGENT_TREE_CACHE (default ~/.cache/agent-tree)/promtool/<version>/bin/promtool.
# Idempotent: a second run finds the cached binary and returns at once.
# The Go module github.com/prometheus/prometheus tags Prometheus 3.x as v0.3XX.Y (v0.316.0 is
# Prometheus 3.16.0); `go install .../cmd/promtool@<module version>` builds it from the proxy.
# v0.316.0 declares `go 1.26.7`, which the local Go 1.26 toolchain accepts (GOTOOLCHAIN=local:
# never try to download another toolchain).
set -euo pipefail

MODULE_VERSION=${PROMETHEUS_MODULE_VERSION:-v0.316.0}
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}
bin_dir=$CACHE/promtool/$MODULE_VERSION/bin
promtool=$bin_dir/promtool

log() { echo "build-promtool.sh: $*" >&2; }

# v0.316.0 -> 3.16.0 (the version Prometheus' own release build stamps).
if [[ $MODULE_VERSION =~ ^v0\.3([0-9][0-9])\.([0-9]+)$ ]]; then
  prom_version="3.$((10#${BASH_REMATCH[1]})).${BASH_REMATCH[2]}"
else
  log "PROMETHEUS_MODULE_VERSION=$MODULE_VERSION: expected a Prometheus 3.x module tag like v0.316.0"
  exit 1
fi

if [ -x "$promtool" ] && "$promtool" --version 2>&1 | grep -q "version $prom_version "; then
  log "promtool $prom_version: cached in $bin_dir"
  echo "$promtool"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed for promtool $prom_version)"; exit 1; }

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# The ldflags of Prometheus' .promu.yml, so `promtool --version` says what it is (the cache
# check above reads it).
ldflags="-s -w -X github.com/prometheus/common/version.Version=$prom_version"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
ldflags+=" -X github.com/prometheus/common/version.Revision=$MODULE_VERSION"

log "promtool $prom_version ($MODULE_VERSION): building into $bin_dir (cold: long, it compiles the service-discovery SDKs; 37 min measured on 2 busy cores)"
start=$(date +%s)
GOBIN=$tmp go install -trimpath -tags netgo -ldflags "$ldflags" \
  "github.com/prometheus/prometheus/cmd/promtool@$MODULE_VERSION"
mv -f "$tmp/promtool" "$promtool"
log "promtool $prom_version: built in $(( $(date +%s) - start ))s"
"$promtool" --version >&2
echo "$promtool"
