#!/usr/bin/env bash
# Makes sure the shared stores the tests use answer: PostgreSQL on 127.0.0.1:5432 (user
# postgres, trust auth) and Redis on 127.0.0.1:6379. It checks, starts a stopped local server,
# installs one where this machine allows it (Debian/Ubuntu as root), and waits. Tests that stop
# a store start their own instance (tests/support/postgres.py, tests/support/redis_server.py);
# these stay running. Set SYNCGATE_SKIP_STORES=1 to manage them yourself.
set -euo pipefail

[ "${SYNCGATE_SKIP_STORES:-0}" = "1" ] && exit 0

say() { printf '[stores] %s\n' "$*" >&2; }
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
can_install() { [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; }

wait_for() {  # name port
    for _ in $(seq 1 60); do
        if port_open "$2"; then return 0; fi
        sleep 1
    done
    say "$1 did not come up on 127.0.0.1:$2 within 60 s"
    exit 1
}

if ! port_open 5432; then
    if ! command -v pg_ctlcluster >/dev/null 2>&1; then
        can_install || { say "PostgreSQL is not installed and cannot be installed here"; exit 1; }
        say "installing postgresql with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
    fi
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    say "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    wait_for PostgreSQL 5432
fi

if ! port_open 6379; then
    if ! command -v redis-server >/dev/null 2>&1; then
        can_install || { say "Redis is not installed and cannot be installed here"; exit 1; }
        say "installing redis-server with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null
    fi
    say "starting Redis"
    mkdir -p /var/lib/redis /var/log/redis
    redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
        --dir /var/lib/redis --logfile /var/log/redis/ci.log
    wait_for Redis 6379
fi
say "PostgreSQL on 127.0.0.1:5432 and Redis on 127.0.0.1:6379 answer"
