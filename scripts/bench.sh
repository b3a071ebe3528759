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
scripts/ensure-node-peer.sh || args+=(--no-node-peer)
exec .venv/bin/python -m bench ${args[@]+"${args[@]}"}
