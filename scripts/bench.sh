#!/usr/bin/env bash
# The bench command: installs syncgate with the bench extra, wrk where apt-get allows it, the
# Node.js peer's packages where node and npm are installed, makes sure the broker is up, then
# runs `python -m bench` with the arguments given (see --help).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-broker.sh
scripts/venv.sh test bench
if ! command -v wrk >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "[bench] installing wrk with apt-get" >&2
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk >/dev/null
    else
        echo "[bench] wrk is not installed; using the Python load generator" >&2
    fi
fi
args=("$@")
node_peer=bench/node_peer
if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then
    # better-sqlite3 is a native addon built for one Node ABI: a new node means a new install.
    want="$(node --version) $(sha256sum "$node_peer/package-lock.json" | cut -c1-16)"
    stamp="$node_peer/node_modules/.syncgate-installed"
    if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
        echo "[bench] installing the node peer's packages (npm ci in $node_peer)" >&2
        if (cd "$node_peer" && npm ci --no-audit --no-fund --loglevel=error >&2); then
            echo "$want" > "$stamp"
        else
            echo "[bench] npm ci failed in $node_peer: the node peer row is left out" >&2
            args+=(--no-node-peer)
        fi
    fi
else
    echo "[bench] node and npm are not both installed: the node peer row is left out" >&2
    args+=(--no-node-peer)
fi
exec .venv/bin/python -m bench ${args[@]+"${args[@]}"}
