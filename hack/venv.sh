#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment and install agent-tree into it, editable, with
# the test tools. Idempotent: reinstalls only when pyproject.toml changed. Source it or run it;
# prints the venv's path on its last line.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${AGENT_TREE_VENV:-$root/.venv}
python=${PYTHON:-python3}
if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  echo "venv.sh: $python is missing or older than 3.11; set PYTHON=/path/to/python3.11" >&2
  exit 1
fi
if [ ! -x "$venv/bin/python" ]; then
  echo "venv.sh: creating $venv" >&2
  "$python" -m venv "$venv"
fi
stamp=$(sha256sum "$root/pyproject.toml" | cut -c1-16)
if [ "$(cat "$venv/.agent-tree-stamp" 2>/dev/null)" != "$stamp" ]; then
  echo "venv.sh: installing agent-tree[dev] into $venv" >&2
  "$venv/bin/python" -m pip install -q --upgrade pip >&2
  "$venv/bin/python" -m pip install -q -e "$root[dev]" >&2
  echo "$stamp" > "$venv/.agent-tree-stamp"
fi
echo "$venv"
