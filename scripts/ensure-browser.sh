#!/usr/bin/env bash
# Makes sure Debian's headless-capable Chromium is at /usr/bin/chromium for the browser test
# (tests/integration/test_browser.py drives it with Playwright). Playwright's own browser
# downloads are not used: the test launches this system binary. Installs it with apt-get where
# this machine allows it (Debian/Ubuntu as root). Set SYNCGATE_SKIP_BROWSER=1 to skip; the
# browser test then skips itself when the binary is missing.
set -euo pipefail

[ "${SYNCGATE_SKIP_BROWSER:-0}" = "1" ] && exit 0

say() { printf '[browser] %s\n' "$*" >&2; }

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
    exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    say "installing chromium with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
else
    say "chromium is not installed and cannot be installed here (needs root and apt-get)."
    say "Install Debian's 'chromium' package; until then the browser test is skipped."
    exit 0
fi
say "chromium is installed: $("$CHROMIUM" --version 2>/dev/null || echo "$CHROMIUM")"
