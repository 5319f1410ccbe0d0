#!/usr/bin/env bash
# CI entry point of the local platform (see docs/development.md).
#
#   hack/ci-platform.sh CMD [ARGS...]
#       build the Go binaries (or reuse ~/.cache/agent-tree), bring the platform
#       up in a fresh directory, export its env (KUBECONFIG, TEMPORAL_ADDRESS,
#       DATABASE_URL, REDIS_URL, PATH with its kubectl first), run CMD, and take
#       the platform down on exit -- also when CMD fails or the script is
#       interrupted. Exits with CMD's status (or 1 when the platform fails).
#
#   source hack/ci-platform.sh --source   # defines the functions only:
#       ci_platform_up     build + up + export env + trap EXIT -> ci_platform_down
#       ci_platform_down   platform status (to the log) + down; keeps the logs
#
# Needs: go (only to build), the repo venv (.venv, pip install -e '.[dev]'),
# apt-get install -y postgresql redis-server openssl
set -uo pipefail

_ci_here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

ci_platform_down() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "${AGENT_TREE_PLATFORM_DIR:-}" ] && [ -d "$AGENT_TREE_PLATFORM_DIR" ]; then
    echo "--- ci-platform: status before down" >&2
    "$_ci_here/platform" status >&2 || true
    "$_ci_here/platform" down >&2 || true
    echo "--- ci-platform: logs kept in $AGENT_TREE_PLATFORM_DIR/logs" >&2
  fi
  return $rc
}

ci_platform_up() {
  local missing=()
  command -v redis-server >/dev/null || missing+=(redis-server)
  compgen -G "/usr/lib/postgresql/*/bin/postgres" >/dev/null || command -v pg_ctl >/dev/null || missing+=(postgresql)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "ci-platform: missing ${missing[*]}: apt-get install -y postgresql redis-server openssl" >&2
    return 1
  fi
  local t0=$SECONDS
  echo "--- ci-platform: build (or reuse the cache)" >&2
  "$_ci_here/build.sh" >/dev/null || { echo "ci-platform: hack/build.sh failed" >&2; return 1; }
  echo "--- ci-platform: build step took $((SECONDS - t0))s" >&2
  export AGENT_TREE_PLATFORM_DIR=${AGENT_TREE_PLATFORM_DIR:-$(mktemp -d /tmp/agent-tree-ci.XXXXXX)}
  trap ci_platform_down EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  t0=$SECONDS
  "$_ci_here/platform" up || { echo "ci-platform: the platform did not come up (see above)" >&2; return 1; }
  echo "--- ci-platform: up took $((SECONDS - t0))s; dir $AGENT_TREE_PLATFORM_DIR" >&2
  set -a
  # shellcheck disable=SC1091
  . "$AGENT_TREE_PLATFORM_DIR/env"
  set +a
}

if [ "${1:-}" = "--source" ]; then
  return 0 2>/dev/null || exit 0
fi
if [ $# -eq 0 ]; then
  sed -n '2,20p' "$0" >&2
  exit 2
fi
ci_platform_up || exit 1
"$@"
