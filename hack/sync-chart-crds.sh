#!/usr/bin/env bash
# Copy the generated CRDs (crds/*.yaml, generated from agent_tree/spec.py) into the Helm chart
# (charts/agent-tree/files/crds/), which renders them from templates/crds.yaml.
#
#   hack/sync-chart-crds.sh          copy; removes chart copies whose source is gone
#   hack/sync-chart-crds.sh --check  exit 1 and name the files when the chart copies drift
#
# tests/unit/test_chart.py fails on drift too; run this after regenerating crds/.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
src=$root/crds
dst=$root/charts/agent-tree/files/crds
check=false
[ "${1:-}" = "--check" ] && check=true

shopt -s nullglob
sources=("$src"/*.yaml)
if [ ${#sources[@]} -eq 0 ]; then
  echo "sync-chart-crds.sh: no CRDs in $src (generate them first)" >&2
  exit 1
fi

drift=()
for f in "${sources[@]}"; do
  name=$(basename "$f")
  if ! cmp -s "$f" "$dst/$name"; then
    drift+=("$name")
    $check || { mkdir -p "$dst"; cp "$f" "$dst/$name"; }
  fi
done
for f in "$dst"/*.yaml; do
  name=$(basename "$f")
  if [ ! -e "$src/$name" ]; then
    drift+=("$name (stale)")
    $check || rm -f "$f"
  fi
done

if [ ${#drift[@]} -eq 0 ]; then
  echo "sync-chart-crds.sh: chart CRDs match crds/" >&2
elif $check; then
  echo "sync-chart-crds.sh: chart CRDs drift from crds/: ${drift[*]}; run hack/sync-chart-crds.sh" >&2
  exit 1
else
  echo "sync-chart-crds.sh: updated ${drift[*]}" >&2
fi
