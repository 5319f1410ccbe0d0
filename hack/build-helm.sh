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
# The Kubernetes version helm assumes without a cluster (`helm template`, `helm lint`) is stamped
# through ldflags as helm's Makefile does (K8S_MODULES_VER: k8s.io/client-go v0.36.x -> 1.36);
# without them helm says v1.20.0 and charts with a `kubeVersion` fail to render.
set -euo pipefail

HELM_VERSION=${HELM_VERSION:-v3.21.4}
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}
# The `-k8s` suffix is the cache key of this build recipe: a helm cached before the Kubernetes
# version ldflags existed (…/helm/v3.21.4/) is not reused.
bin_dir=$CACHE/helm/$HELM_VERSION-k8s/bin
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

# Makefile: K8S_MODULES_VER from `go list -m k8s.io/client-go`; major = 0 + 1, minor = 36.
helm_src=$(cd "$tmp" && go mod download -json "helm.sh/helm/v3@$HELM_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
client_go=$(awk '$1 == "k8s.io/client-go" { print $2; exit }' "$helm_src/go.mod")
if [[ ! $client_go =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
  log "cannot read the k8s.io/client-go version from $helm_src/go.mod (got '$client_go')"
  exit 1
fi
k8s_major=$(( BASH_REMATCH[1] + 1 ))
k8s_minor=${BASH_REMATCH[2]}

# helm's own Makefile stamps the version through ldflags; without them
# `helm version` prints v3.x-dev-ish defaults, and the cache check above needs it.
ldflags="-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION"
ldflags+=" -X helm.sh/helm/v3/internal/version.gitTreeState=clean"
for pkg in helm.sh/helm/v3/pkg/lint/rules helm.sh/helm/v3/pkg/chartutil; do
  ldflags+=" -X $pkg.k8sVersionMajor=$k8s_major -X $pkg.k8sVersionMinor=$k8s_minor"
done

log "helm $HELM_VERSION (Kubernetes $k8s_major.$k8s_minor from client-go $client_go): building into $bin_dir (cold: a few minutes on 2 cores)"
start=$(date +%s)
GOBIN=$tmp go install -trimpath -ldflags "$ldflags" "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
mv -f "$tmp/helm" "$helm"
log "helm $HELM_VERSION: built in $(( $(date +%s) - start ))s"
"$helm" version >&2
echo "$helm"
