#!/usr/bin/env bash
# The test command: installs what the tests need, checks lint, types and the import layers,
# then runs every test against the real local broker. Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-broker.sh
# PostgreSQL and Redis, which the scale-out tests use (each test in a database or key prefix
# of its own).
scripts/ensure-stores.sh
# Chromium for the browser test (Debian's package; Playwright's downloads are not used).
scripts/ensure-browser.sh
# The bench extra too: the bench smoke test runs the FastAPI + FastStream peer, and the
# Node.js peer where node is installed (the smoke test says so when it is not).
scripts/venv.sh test bench
scripts/ensure-node-peer.sh || true
# promtool for the alert-rule tests, unpacked from Debian's prometheus package (no Prometheus
# server is installed or started). Where it cannot be had, the script says why and those tests
# skip; where it could be but is not, they fail.
scripts/ensure-promtool.sh >/dev/null || true

echo "[test] ruff" >&2
.venv/bin/ruff check .
.venv/bin/ruff format --check .
echo "[test] mypy --strict" >&2
.venv/bin/mypy
echo "[test] import-linter: the layers (pyproject.toml [tool.importlinter])" >&2
.venv/bin/lint-imports --no-cache
echo "[test] event schemas: exported files current, released versions unchanged" >&2
.venv/bin/syncgate schemas check
echo "[test] pytest" >&2
exec .venv/bin/pytest "$@"
