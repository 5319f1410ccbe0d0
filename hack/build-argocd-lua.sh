#!/usr/bin/env bash
# Build (or reuse from cache) hack/tools/argocd-lua: Argo CD's own Lua engine (the util/lua package
# of github.com/argoproj/argo-cd/v3) as a small CLI, to run deploy/argocd's health checks and
# actions exactly as the Argo CD application controller and API server run them.
#
#   hack/build-argocd-lua.sh      -> prints the argocd-lua binary's path on stdout (last line)
#
# Output: $AGENT_TREE_CACHE (default ~/.cache/agent-tree)/argocd-lua/<key>/argocd-lua, where <key>
# is a hash of the helper's go.mod, go.sum and main.go: editing any of them builds a new binary;
# otherwise a second run finds the cached one and returns at once.
# Argo CD 3.6 declares `go 1.27`: the build runs with GOTOOLCHAIN=go1.27.3 (the go command fetches
# that toolchain from the Go module proxy). Never `go mod tidy` here: argo-cd's tests import
# k8s.io/kubelet@v0.0.0 (a staging module), which go.mod's replace block pins for `go build` only.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/hack/tools/argocd-lua
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}
TOOLCHAIN=${ARGOCD_LUA_GOTOOLCHAIN:-go1.27.3}

log() { echo "build-argocd-lua.sh: $*" >&2; }

key=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-16)
bin_dir=$CACHE/argocd-lua/$key
bin=$bin_dir/argocd-lua

if [ -x "$bin" ]; then
  log "argocd-lua $key: cached in $bin_dir"
  echo "$bin"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (argo-cd v3.6 builds with $TOOLCHAIN, which go fetches)"; exit 1; }

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN=$TOOLCHAIN

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "argocd-lua $key: building into $bin_dir with $TOOLCHAIN (cold: about 6 minutes on 2 cores)"
start=$(date +%s)
(cd "$src" && go build -trimpath -ldflags "-s -w" -o "$tmp/argocd-lua" .)
mv -f "$tmp/argocd-lua" "$bin"
log "argocd-lua $key: built in $(( $(date +%s) - start ))s"
echo "$bin"
