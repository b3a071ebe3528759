#!/usr/bin/env bash
# Installs the Node.js peer's locked packages (npm ci in bench/node_peer) where node and npm
# are installed, again only when node or the lockfile changed. Exit 0 when the packages are
# in place, 1 when they cannot be (no node or npm, or npm ci failed), saying why on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

node_peer=bench/node_peer
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "[node-peer] node and npm are not both installed: the node peer is left out" >&2
    exit 1
fi
# better-sqlite3 is a native addon built for one Node ABI: a new node means a new install.
want="$(node --version) $(sha256sum "$node_peer/package-lock.json" | cut -c1-16)"
stamp="$node_peer/node_modules/.syncgate-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[node-peer] installing the node peer's packages (npm ci in $node_peer)" >&2
if (cd "$node_peer" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "$want" > "$stamp"
else
    echo "[node-peer] npm ci failed in $node_peer: the node peer is left out" >&2
    exit 1
fi
