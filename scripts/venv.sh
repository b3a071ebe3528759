#!/usr/bin/env bash
# Creates .venv and installs syncgate into it (editable), with the extras named as arguments.
# Re-installs only when pyproject.toml or the extras changed.
set -euo pipefail
cd "$(dirname "$0")/.."

extras=$(IFS=,; echo "$*")
spec="."
[ -n "$extras" ] && spec=".[$extras]"

python=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "[venv] creating .venv with $($python --version)" >&2
    "$python" -m venv .venv
fi
stamp=".venv/.syncgate-installed"
want="$(sha256sum pyproject.toml | cut -c1-16) $extras"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
    echo "[venv] installing $spec" >&2
    # Some machines point PIP_FIND_LINKS at folders that may not exist; pip warns per package.
    quiet() { grep -v "is ignored: it is neither a file nor a directory" || true; }
    .venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet >&2
    .venv/bin/python -m pip install -q -e "$spec" 2>&1 | quiet >&2
    echo "$want" > "$stamp"
fi
