#!/usr/bin/env bash
# Build (or reuse from cache) the helm v3 CLI from the Go module proxy.
#
#   hack/build-helm.sh            -> prints the helm binary's path on stdout (last line)
#   HELM_VERSION=v3.20.2 hack/build-helm.sh
#
# Output: $AGENT_TREE_CACHE (default ~/.cache/agent-tree)/helm/<version>/bin/helm.
# Idempotent: a second run finds the cached binary and returns at once.
# Helm is not downloaded as a release tarball (no network but the package
# registries here): `go install helm.sh/helm/v3/cmd/helm@<version>` builds it.
# v3.21.x declares `go 1.26.0`, which the local Go 1.26 toolchain accepts
# (GOTOOLCHAIN=local: never try to download another toolchain).
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}
bin_dir=$CACHE/helm/$HELM_VERSION/bin
helm=$bin_dir/helm

log() { echo "build-helm.sh: $*" >&2; }

if [ -x "$helm" ] && "$helm" version --template '{{.Version}}' 2>/dev/null | grep -qx "$HELM_VERSION"; then
  log "helm $HELM_VERSION: cached in $bin_dir"
  echo "$helm"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed for helm $HELM_VERSION)"; exit 1; }

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

# helm's own Makefile stamps the version through ldflags; without them
# `helm version` prints v3.x-dev-ish defaults, and the cache check above needs it.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"

log "helm $HELM_VERSION: building into $bin_dir (cold: a few minutes on 2 cores)"
start=$(date +%s)
GOBIN=$tmp go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$tmp/helm" "$helm"
log "helm $HELM_VERSION: built in $(( $(date +%s) - start ))s"
"$helm" version >&2
echo "$helm"
