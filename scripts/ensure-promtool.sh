#!/usr/bin/env bash
# Makes sure promtool, Prometheus' rule and config checker, is at hand for the alert-rule
# tests (tests/unit/test_alerts.py runs `promtool check rules`, `check config` and `test rules`
# over deploy/prometheus/). Debian's `prometheus` package ships promtool, but installing that
# package also starts a Prometheus server. So only the one binary is taken: the package is
# fetched (`apt-get download`, or the copy in apt's own cache) and unpacked with `dpkg -x`
# into a cache dir. Nothing is installed into the system and nothing is started.
#
#   scripts/ensure-promtool.sh          find promtool or fetch it; print its path on stdout
#   scripts/ensure-promtool.sh --find   only look: print its path (exit 0), or say why not
#                                       and exit 1 if this machine could fetch it (run the
#                                       script without --find), 3 if it cannot
#
# Where it looks, in this order: $SYNCGATE_PROMTOOL, `promtool` on PATH, the cache dir.
#   SYNCGATE_PROMTOOL        a promtool to use as is
#   SYNCGATE_PROMTOOL_CACHE  the cache dir [${XDG_CACHE_HOME:-$HOME/.cache}/syncgate/promtool]
set -euo pipefail

say() { printf '[promtool] %s\n' "$*" >&2; }

CACHE=${SYNCGATE_PROMTOOL_CACHE:-${XDG_CACHE_HOME:-${HOME:-/root}/.cache}/syncgate/promtool}
CACHED="$CACHE/bin/promtool"

works() { [ -n "$1" ] && [ -x "$1" ] && "$1" --version >/dev/null 2>&1; }

find_promtool() {
    local on_path
    on_path=$(command -v promtool 2>/dev/null || true)
    if works "$on_path"; then
        echo "$on_path"
        return 0
    fi
    if works "$CACHED"; then
        echo "$CACHED"
        return 0
    fi
    return 1
}

# Why this machine cannot fetch it, or nothing when it can: apt-get and dpkg, and either a
# package list that knows `prometheus` or root to run apt-get update.
cannot_fetch() {
    command -v apt-get >/dev/null 2>&1 || { echo "no apt-get (not Debian or Ubuntu)"; return; }
    command -v dpkg-deb >/dev/null 2>&1 || { echo "no dpkg-deb"; return; }
    if [ "$(id -u)" != 0 ] && ! apt-cache show prometheus >/dev/null 2>&1; then
        echo "apt knows no 'prometheus' package and only root can run apt-get update"
    fi
}

# The package file: apt's own cache if it holds one, else apt-get download (after an
# apt-get update if the lists are stale). Prints its path.
fetch_deb() {
    local dir=$1 deb="" found
    for found in /var/cache/apt/archives/prometheus_*.deb; do
        [ -f "$found" ] && deb=$found
    done
    if [ -n "$deb" ]; then
        say "using $deb from apt's cache"
        echo "$deb"
        return 0
    fi
    # apt-get download writes into the current directory; as root it warns that it cannot
    # drop to the _apt user there, which is harmless.
    if ! (cd "$dir" && apt-get download -qq prometheus 2>/dev/null); then
        if [ "$(id -u)" = 0 ]; then
            say "apt-get update (the package lists do not have it)"
            apt-get update -qq >/dev/null
            (cd "$dir" && apt-get download -qq prometheus 2>/dev/null) || return 1
        else
            return 1
        fi
    fi
    for found in "$dir"/prometheus_*.deb; do
        [ -f "$found" ] && echo "$found" && return 0
    done
    return 1
}

TMP=""
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT

install_promtool() {
    local deb
    TMP=$(mktemp -d)
    chmod 755 "$TMP"
    deb=$(fetch_deb "$TMP") || { say "could not download Debian's prometheus package"; return 1; }
    dpkg-deb -x "$deb" "$TMP/root"
    [ -x "$TMP/root/usr/bin/promtool" ] || { say "$deb holds no usr/bin/promtool"; return 1; }
    mkdir -p "$CACHE/bin"
    cp "$TMP/root/usr/bin/promtool" "$CACHED.new"
    mv -f "$CACHED.new" "$CACHED"
    works "$CACHED" || { say "$CACHED does not run"; return 1; }
    say "promtool unpacked from $(basename "$deb") into $CACHED: $("$CACHED" --version 2>&1 | head -n 1)"
}

main() {
    local mode=${1:-ensure} why
    case "$mode" in
        ensure | --find) ;;
        -h | --help) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2 ;;
    esac
    if [ -n "${SYNCGATE_PROMTOOL:-}" ]; then
        # Chosen by hand: used as is, never replaced by a fetched one.
        works "$SYNCGATE_PROMTOOL" || { say "SYNCGATE_PROMTOOL=$SYNCGATE_PROMTOOL does not run"; exit 1; }
        echo "$SYNCGATE_PROMTOOL"
        exit 0
    fi
    if find_promtool; then
        exit 0
    fi
    why=$(cannot_fetch)
    if [ "$mode" = --find ]; then
        if [ -n "$why" ]; then
            say "promtool is missing and cannot be fetched here: $why"
            exit 3
        fi
        say "promtool is missing; scripts/ensure-promtool.sh fetches it (scripts/test.sh runs it)"
        exit 1
    fi
    if [ -n "$why" ]; then
        say "promtool is missing and cannot be fetched here: $why."
        say "Install promtool (Prometheus' release tarball has it), or set SYNCGATE_PROMTOOL;"
        say "until then the promtool tests are skipped."
        exit 3
    fi
    install_promtool || exit 1
    echo "$CACHED"
}

main "$@"
