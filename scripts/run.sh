#!/usr/bin/env bash
# The run command: installs syncgate, makes sure the broker is up, creates dev settings in
# var/ the first time, then runs the gateway and one consumer until Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-broker.sh
scripts/venv.sh

mkdir -p var
env_file=.env.dev
if [ ! -f "$env_file" ]; then
    echo "[run] writing $env_file with a new session key (git-ignored)" >&2
    umask 077
    cat > "$env_file" <<ENV
# Dev settings for \`make run\`. Never commit this file: it holds the session key.
SYNCGATE_SESSION_KEYS=$(.venv/bin/syncgate keygen)
# Plain http on localhost: browsers drop Secure cookies there.
SYNCGATE_COOKIE_SECURE=false
SYNCGATE_USERS_FILE=var/users.json
SYNCGATE_APP_SETTINGS_FILE=var/app-settings.toml
SYNCGATE_RUN_STORE=var/runs.sqlite3
SYNCGATE_LOG_FORMAT=console
ENV
fi
set -a
# shellcheck disable=SC1090
. "./$env_file"
set +a

[ -f "$SYNCGATE_APP_SETTINGS_FILE" ] || cp examples/app-settings.toml "$SYNCGATE_APP_SETTINGS_FILE"
if [ ! -f "$SYNCGATE_USERS_FILE" ]; then
    password=$(.venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(12))')
    echo "$password" | .venv/bin/syncgate users add demo@example.com --name "Demo User" >/dev/null
    echo "$password" > var/demo-password
    chmod 600 var/demo-password
fi

pids=()
stop() {
    trap - INT TERM
    echo "[run] stopping" >&2
    kill -TERM "${pids[@]}" 2>/dev/null || true
    wait "${pids[@]}" 2>/dev/null || true
}
trap stop INT TERM

.venv/bin/syncgate consumer & pids+=($!)
.venv/bin/syncgate gateway & pids+=($!)

port=${SYNCGATE_PORT:-8080}
cat >&2 <<MSG
[run] gateway  http://127.0.0.1:$port  (management UI: http://127.0.0.1:15672, guest/guest)
[run] sign in as demo@example.com with the password in var/demo-password:
        curl -c var/cookies -H 'Content-Type: application/json' \\
          -d "{\"email\":\"demo@example.com\",\"password\":\"\$(cat var/demo-password)\"}" \\
          http://127.0.0.1:$port/api/auth/login
        csrf=\$(curl -s -b var/cookies http://127.0.0.1:$port/api/auth/csrf \\
          | .venv/bin/python -c 'import json, sys; print(json.load(sys.stdin)["csrfToken"])')
        curl -b var/cookies -H 'Content-Type: application/json' -H "X-CSRF-Token: \$csrf" \\
          -d '{"data":"data"}' http://127.0.0.1:$port/api/sync
[run] see recorded runs: .venv/bin/syncgate runs --store var/runs.sqlite3
[run] Ctrl-C stops both.
MSG
wait "${pids[@]}"
