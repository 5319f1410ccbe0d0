#!/usr/bin/env bash
# Build the web view: web/ (TypeScript) -> api/agent_tree_api/static/{index.html,app.js,app.css},
# which `agent-tree api` serves at / and the package ships (package-data). The toolchain is pinned in
# web/package-lock.json (typescript + esbuild from the npm registry); npm's cache is kept under
# ~/.cache/agent-tree/npm. `npm ci` runs only when the lock file changed since the last install.
# The Dockerfile runs the same two npm commands in its build stage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root/web"
if ! command -v npm >/dev/null; then
  echo "build-web.sh: npm is missing (Debian: apt-get install nodejs npm)" >&2
  exit 1
fi
cache=${AGENT_TREE_NPM_CACHE:-$HOME/.cache/agent-tree/npm}
stamp=$(sha256sum package-lock.json | cut -c1-16)
if [ "$(cat node_modules/.agent-tree-stamp 2>/dev/null)" != "$stamp" ]; then
  npm ci --cache "$cache" --no-audit --no-fund --loglevel=error >&2
  echo "$stamp" > node_modules/.agent-tree-stamp
fi
npm run --silent build >&2
