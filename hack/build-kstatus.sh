#!/usr/bin/env bash
# Build (or reuse from cache) the kstatus helper (hack/tools/kstatus) from the Go module proxy.
#
#   hack/build-kstatus.sh         -> prints the helper's path on stdout (last line)
#
# The helper runs sigs.k8s.io/cli-utils/pkg/kstatus/status.Compute - what Helm 4 `--wait`, Flux and
# kpt use to decide that a resource is reconciled - on objects read from a file or stdin.
# Output: $AGENT_TREE_CACHE (default ~/.cache/agent-tree)/kstatus/<cli-utils version>-<source hash>/bin/kstatus.
# Idempotent: a second run finds the cached binary and returns at once; an edit of the helper's
# go.mod, go.sum or main.go changes the hash, so the next run rebuilds.
# The module pins every dependency in the committed go.sum (-mod=readonly: a build never changes it).
# It declares `go 1.22.0`; the local Go 1.26 toolchain builds it (GOTOOLCHAIN=local: never try to
# download another toolchain).
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/hack/tools/kstatus
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}

log() { echo "build-kstatus.sh: $*" >&2; }

cli_utils=$(awk '$1 == "sigs.k8s.io/cli-utils" { print $2; exit }' "$src/go.mod")
[ -n "$cli_utils" ] || { log "$src/go.mod does not require sigs.k8s.io/cli-utils"; exit 1; }
hash=$(cat "$src/go.mod" "$src/go.sum" "$src/main.go" | sha256sum | cut -c1-12)
bin_dir=$CACHE/kstatus/$cli_utils-$hash/bin
kstatus=$bin_dir/kstatus

if [ -x "$kstatus" ] && "$kstatus" --version 2>/dev/null | grep -qF "sigs.k8s.io/cli-utils $cli_utils"; then
  log "kstatus (cli-utils $cli_utils): cached in $bin_dir"
  echo "$kstatus"
  exit 0
fi

command -v go >/dev/null || { log "go is not on PATH (Go >= 1.22 is needed for the kstatus helper)"; exit 1; }

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

mkdir -p "$bin_dir"
tmp=$(mktemp -d "$bin_dir/.build.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

log "kstatus (cli-utils $cli_utils): building into $bin_dir (cold: a few minutes on 2 cores)"
start=$(date +%s)
(cd "$src" && go build -mod=readonly -trimpath -ldflags "-s -w" -o "$tmp/kstatus" .)
mv -f "$tmp/kstatus" "$kstatus"
log "kstatus: built in $(( $(date +%s) - start ))s"
"$kstatus" --version >&2
echo "$kstatus"
