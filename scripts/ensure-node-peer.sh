#!/usr/bin/env bash
# Installs the locked Node.js packages of the bench's Node.js peer (bench/node_peer) and of the
# Node.js consumer example (examples/node-consumer), with `npm ci`, where node and npm are
# installed; again only when node or a lockfile changed. Exit 0 when both are in place, 1 when
# they cannot be (no node or npm, or npm ci failed), saying why on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "[node] node and npm are not both installed: the node peer and example are left out" >&2
    exit 1
fi
status=0
for dir in bench/node_peer examples/node-consumer; do
    # better-sqlite3 is a native addon built for one Node ABI: a new node means a new install.
    want="$(node --version) $(sha256sum "$dir/package-lock.json" | cut -c1-16)"
    stamp="$dir/node_modules/.syncgate-installed"
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        continue
    fi
    echo "[node] installing the locked packages (npm ci in $dir)" >&2
    if (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error >&2); then
        echo "$want" > "$stamp"
    else
        echo "[node] npm ci failed in $dir: it is left out" >&2
        status=1
    fi
done
exit $status
