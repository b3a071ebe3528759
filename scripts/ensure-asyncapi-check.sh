#!/usr/bin/env bash
# Installs the AsyncAPI validator's locked packages (npm ci in tests/asyncapi_check) where node
# and npm are installed, again only when node or the lockfile changed. Exit 0 when the packages
# are in place, 1 when they cannot be (no node or npm, or npm ci failed), saying why on stderr.
set -euo pipefail
cd "$(dirname "$0")/.."

check=tests/asyncapi_check
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    echo "[asyncapi-check] node and npm are not both installed" >&2
    exit 1
fi
want="$(node --version) $(sha256sum "$check/package-lock.json" | cut -c1-16)"
stamp="$check/node_modules/.syncgate-installed"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
echo "[asyncapi-check] installing @asyncapi/parser (npm ci in $check)" >&2
if (cd "$check" && npm ci --no-audit --no-fund --loglevel=error >&2); then
    echo "$want" > "$stamp"
else
    echo "[asyncapi-check] npm ci failed in $check" >&2
    exit 1
fi
