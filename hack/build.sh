#!/usr/bin/env bash
# Build (or reuse from cache) the binaries of the local platform:
#   - one multi-call binary from hack/k8s/ holding kube-apiserver,
#     kube-controller-manager, kube-scheduler, kubectl and etcd, plus
#     symlinks named after each component;
#   - kwok (separately: its k8s.io requirements differ from kubernetes').
# Output: $AGENT_TREE_CACHE (default ~/.cache/agent-tree)/k8s/<version>/bin
#         and .../kwok/<version>/bin. Idempotent: skips whatever is cached.
# Prints the bin directories on stdout's last two lines as KEY=VALUE.
set -euo pipefail

K8S_VERSION=${K8S_VERSION:-v1.35.4}
KWOK_VERSION=${KWOK_VERSION:-v0.8.0}
CACHE=${AGENT_TREE_CACHE:-$HOME/.cache/agent-tree}
here=$(cd "$(dirname "$0")" && pwd)
k8s_src=$here/k8s
k8s_bin=$CACHE/k8s/$K8S_VERSION/bin
kwok_bin=$CACHE/kwok/$KWOK_VERSION/bin

export CGO_ENABLED=0
export GOFLAGS="${GOFLAGS:--buildvcs=false}"
export GOTOOLCHAIN="${GOTOOLCHAIN:-local}"

log() { echo "build.sh: $*" >&2; }

need_go() { command -v go >/dev/null || { log "go is not on PATH (Go >= 1.26 is needed to build)"; exit 1; }; }

# --- kubernetes components + etcd + kubectl -------------------------------
stamp=$(cat "$k8s_src/main.go" "$k8s_src/go.mod" "$k8s_src/go.sum" 2>/dev/null | sha256sum | cut -c1-16)
if [ -x "$k8s_bin/k8s" ] && [ "$(cat "$k8s_bin/.stamp" 2>/dev/null)" = "$stamp" ]; then
  log "k8s $K8S_VERSION: cached in $k8s_bin"
else
  need_go
  if [ ! -f "$k8s_src/go.mod" ] || ! grep -q "k8s.io/kubernetes@${K8S_VERSION}" "$k8s_src/go.mod"; then
    "$k8s_src/gen-gomod.sh"
    (cd "$k8s_src" && go mod tidy)
    stamp=$(cat "$k8s_src/main.go" "$k8s_src/go.mod" "$k8s_src/go.sum" | sha256sum | cut -c1-16)
  fi
  minor=${K8S_VERSION#v1.}; minor=${minor%%.*}
  ldflags="-s -w"
  for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$K8S_VERSION -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"
  done
  log "k8s $K8S_VERSION: building into $k8s_bin (cold: ~20 min on 2 cores)"
  mkdir -p "$k8s_bin"
  start=$(date +%s)
  (cd "$k8s_src" && go build -trimpath -tags selinux,notest -ldflags "$ldflags" -o "$k8s_bin/k8s.tmp" .)
  mv -f "$k8s_bin/k8s.tmp" "$k8s_bin/k8s"
  for c in kube-apiserver kube-controller-manager kube-scheduler kubectl etcd; do
    ln -sfn k8s "$k8s_bin/$c"
  done
  echo "$stamp" > "$k8s_bin/.stamp"
  log "k8s $K8S_VERSION: built in $(( $(date +%s) - start ))s"
fi

# --- kwok -----------------------------------------------------------------
if [ -x "$kwok_bin/kwok" ]; then
  log "kwok $KWOK_VERSION: cached in $kwok_bin"
else
  need_go
  log "kwok $KWOK_VERSION: building into $kwok_bin"
  mkdir -p "$kwok_bin"
  start=$(date +%s)
  GOBIN="$kwok_bin" go install -trimpath -ldflags "-s -w" "sigs.k8s.io/kwok/cmd/kwok@$KWOK_VERSION"
  log "kwok $KWOK_VERSION: built in $(( $(date +%s) - start ))s"
fi

# kwok's default ("fast") stages: nodes become Ready (heartbeat via a Lease),
# pods become Running/Ready at once, deleted pods go away. They ship as YAML in
# kwok's module (kustomize/stage); kwokctl embeds them, the bare binary does not.
if [ ! -s "$kwok_bin/stages.yaml" ]; then
  need_go
  kwok_src=$(cd / && go mod download -json "sigs.k8s.io/kwok@$KWOK_VERSION" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  st=$kwok_src/kustomize/stage
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    [ -f "$st/$f" ] || { log "kwok stage $f not found in $st"; exit 1; }
    echo "---"; cat "$st/$f"
  done > "$kwok_bin/stages.yaml.tmp"
  mv -f "$kwok_bin/stages.yaml.tmp" "$kwok_bin/stages.yaml"
  log "kwok $KWOK_VERSION: stages written to $kwok_bin/stages.yaml"
fi

echo "K8S_BIN=$k8s_bin"
echo "KWOK_BIN=$kwok_bin"
