#!/usr/bin/env bash
# Makes sure a RabbitMQ broker answers on 127.0.0.1:5672 with its management API on :15672.
# It checks, starts a stopped local broker, installs one where this machine allows it
# (Debian/Ubuntu as root), and waits. Set SYNCGATE_SKIP_BROKER=1 to manage the broker yourself.
set -euo pipefail

[ "${SYNCGATE_SKIP_BROKER:-0}" = "1" ] && exit 0

say() { printf '[broker] %s\n' "$*" >&2; }

amqp_open() { (exec 3<>/dev/tcp/127.0.0.1/5672) 2>/dev/null; }
broker_running() { command -v rabbitmqctl >/dev/null && rabbitmqctl -q status >/dev/null 2>&1; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
    if amqp_open; then
        say "no local rabbitmq-server, but something answers on :5672; using it"
        exit 0
    fi
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "installing rabbitmq-server with apt-get"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
    else
        say "RabbitMQ is not installed and cannot be installed here (needs root and apt-get)."
        say "Install it, or run 'docker compose up rabbitmq', then try again."
        exit 1
    fi
fi

if ! broker_running; then
    say "starting rabbitmq-server"
    rabbitmq-server -detached >/dev/null 2>&1 || true
fi

say "waiting for the broker"
for _ in $(seq 1 120); do
    if broker_running && amqp_open; then break; fi
    sleep 1
done
if ! amqp_open; then
    say "RabbitMQ did not come up on 127.0.0.1:5672 within 120 s"
    exit 1
fi
# Wait until the node has fully booted (plugins and all), not just opened its port.
rabbitmqctl -q await_startup >/dev/null 2>&1 || true

if ! rabbitmq-plugins -q is_enabled rabbitmq_management >/dev/null 2>&1; then
    say "enabling the management UI and HTTP API on :15672"
    rabbitmq-plugins -q enable rabbitmq_management >/dev/null
fi
for _ in $(seq 1 60); do
    if (exec 3<>/dev/tcp/127.0.0.1/15672) 2>/dev/null; then break; fi
    sleep 1
done
say "RabbitMQ is up: amqp://127.0.0.1:5672  management http://127.0.0.1:15672 (guest/guest)"
