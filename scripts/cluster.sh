#!/usr/bin/env bash
# A three-node RabbitMQ cluster on this one machine, beside the standard broker, for the
# scale-out tests and for anyone who wants to try syncgate against a clustered broker.
#
#   scripts/cluster.sh start [--fresh]   start syncgate-c1..c3@localhost and form the cluster
#                                        (--fresh: wipe the cluster's own state first)
#   scripts/cluster.sh stop [--purge]    stop all three cleanly (--purge: delete the state dir)
#   scripts/cluster.sh status            which nodes run, and the cluster's members
#   scripts/cluster.sh urls              the AMQP URLs, comma-separated
#   scripts/cluster.sh kill N            kill -9 node N's Erlang VM (a crash, not a stop)
#   scripts/cluster.sh start-node N      start node N again; waits until it is a member
#   scripts/cluster.sh ctl N ARGS...     rabbitmqctl against node N, with the cluster's cookie
#
# Node i (1..3) listens on 127.0.0.1 only: AMQP 5680+i, management 15680+i, Prometheus
# 15690+i (/metrics, /metrics/detailed), Erlang distribution 25680+i. guest/guest works, as
# on the standard node (guest may only connect from loopback).
#
# Settings (environment variables, all optional):
#   SYNCGATE_CLUSTER_DIR               state dir (configs, cookie, data, logs)
#                                      [/var/tmp/syncgate-cluster]
#   SYNCGATE_CLUSTER_NODE_PREFIX       node i is <prefix>i@localhost [syncgate-c]
#   SYNCGATE_CLUSTER_AMQP_PORT_BASE    node i's AMQP port is base+i [5680]
#   SYNCGATE_CLUSTER_MANAGEMENT_PORT_BASE  node i's management port is base+i [15680]
#   SYNCGATE_CLUSTER_PROMETHEUS_PORT_BASE  node i's Prometheus port is base+i [15690]
#   SYNCGATE_CLUSTER_DIST_PORT_BASE    node i's distribution port is base+i [25680]
#   SYNCGATE_CLUSTER_CTL_PORT_MIN      rabbitmqctl runs here use distribution ports from
#                                      min to min+19, apart from the standard CLI's
#                                      35672-35682 [35690]
#   SYNCGATE_CLUSTER_START_TIMEOUT     seconds a start may take before it fails [180]
#   SYNCGATE_CLUSTER_STOP_TIMEOUT      seconds a node may take to stop before SIGTERM [60]
#   SYNCGATE_CLUSTER_USER              the user the nodes run as [rabbitmq]
#   SYNCGATE_CLUSTER_RABBITMQ_BIN      where rabbitmq-server and rabbitmqctl are
#                                      [/usr/lib/rabbitmq/bin]
#
# What it never touches: the standard node rabbit@localhost and its files (/etc/rabbitmq,
# /var/lib/rabbitmq, /var/log/rabbitmq). Every node here gets its own config, env file,
# plugins file, data, logs and pid file under the state dir, and the three share an Erlang
# cookie of their own (generated once into the state dir), so neither a node of this cluster
# nor a rabbitmqctl run through this script can authenticate to the standard node: a mistaken
# join_cluster or reset aimed at it is refused by Erlang distribution itself. The shared epmd
# (127.0.0.1:4369, started by the standard node) is used, never stopped.
#
# Run as root (the nodes then run as the rabbitmq user, through runuser, as Debian's
# packaging does) or as the rabbitmq user itself.
set -euo pipefail

STATE_DIR=${SYNCGATE_CLUSTER_DIR:-/var/tmp/syncgate-cluster}
NODE_PREFIX=${SYNCGATE_CLUSTER_NODE_PREFIX:-syncgate-c}
AMQP_PORT_BASE=${SYNCGATE_CLUSTER_AMQP_PORT_BASE:-5680}
MANAGEMENT_PORT_BASE=${SYNCGATE_CLUSTER_MANAGEMENT_PORT_BASE:-15680}
PROMETHEUS_PORT_BASE=${SYNCGATE_CLUSTER_PROMETHEUS_PORT_BASE:-15690}
DIST_PORT_BASE=${SYNCGATE_CLUSTER_DIST_PORT_BASE:-25680}
CTL_PORT_MIN=${SYNCGATE_CLUSTER_CTL_PORT_MIN:-35690}
START_TIMEOUT=${SYNCGATE_CLUSTER_START_TIMEOUT:-180}
STOP_TIMEOUT=${SYNCGATE_CLUSTER_STOP_TIMEOUT:-60}
RUN_USER=${SYNCGATE_CLUSTER_USER:-rabbitmq}
RABBITMQ_BIN=${SYNCGATE_CLUSTER_RABBITMQ_BIN:-/usr/lib/rabbitmq/bin}

NODES=(1 2 3)
HOST=localhost
# The standard node's name and ports: refused as settings here, so an override cannot make a
# cluster node collide with (or stand in for) the standard broker.
STANDARD_NODE=rabbit@localhost
STANDARD_PORTS=(5672 15672 25672)
# Marks a state dir as this script's, so --fresh and --purge never delete anything else.
MARKER=.syncgate-cluster
# A rabbitmqctl call that takes longer than this is stuck (each one boots a small Erlang VM).
CTL_LIMIT=60

say() { printf '[cluster] %s\n' "$*" >&2; }
die() { say "$*"; exit 1; }

# The header above, up to the settings: on stdout for help, on stderr (exit 2) for a
# command line this script does not take.
usage() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

help() {
    sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'
}

node_name() { echo "${NODE_PREFIX}$1@${HOST}"; }
node_dir() { echo "$STATE_DIR/c$1"; }
pid_file() { echo "$(node_dir "$1")/$(node_name "$1").pid"; }
log_file() { echo "$(node_dir "$1")/log/$(node_name "$1").log"; }
startup_log() { echo "$(node_dir "$1")/log/startup.log"; }
amqp_port() { echo $((AMQP_PORT_BASE + $1)); }
management_port() { echo $((MANAGEMENT_PORT_BASE + $1)); }
prometheus_port() { echo $((PROMETHEUS_PORT_BASE + $1)); }
dist_port() { echo $((DIST_PORT_BASE + $1)); }
cookie_home() { echo "$STATE_DIR/home"; }

now() { date +%s; }

# One command that changes the cluster at a time (two sessions starting it with --fresh, or
# a stop --purge under a start, would otherwise interleave). The lock file sits beside the
# state dir, so that a purge does not delete it; fd 9 is closed for the nodes themselves.
take_lock() {
    local lock="${STATE_DIR%/}.lock"
    exec 9>>"$lock"
    if [ "$(id -u)" = 0 ]; then
        chown "$RUN_USER:$RUN_USER" "$lock" # so that the nodes' user can run this too
    fi
    if ! flock -n 9; then
        say "waiting for another cluster.sh run to finish (lock $lock)"
        flock -w "$START_TIMEOUT" 9 || die "another cluster.sh run holds $lock"
    fi
}

check_node_number() {
    case "${1:-}" in
        1 | 2 | 3) ;;
        *) die "expected a node number 1, 2 or 3, got '${1:-}'" ;;
    esac
}

# Refuse settings that could point this script at the standard node or its files.
check_settings() {
    local n port
    case "$STATE_DIR" in
        /* ) ;;
        *) die "SYNCGATE_CLUSTER_DIR must be an absolute path, got '$STATE_DIR'" ;;
    esac
    case "${STATE_DIR%/}/" in
        / | /var/ | /var/tmp/ | /tmp/ | /var/lib/ | /etc/ | /var/lib/rabbitmq/* | /etc/rabbitmq/* \
            | /var/log/rabbitmq/* | /usr/*)
            die "refusing SYNCGATE_CLUSTER_DIR=$STATE_DIR: it must be a dir of its own" ;;
    esac
    for n in "${NODES[@]}"; do
        [ "$(node_name "$n")" != "$STANDARD_NODE" ] || die "node $n would be $STANDARD_NODE"
        for port in "$(amqp_port "$n")" "$(management_port "$n")" "$(prometheus_port "$n")" \
            "$(dist_port "$n")"; do
            for standard in "${STANDARD_PORTS[@]}"; do
                [ "$port" != "$standard" ] || die "node $n would use the standard node's port $port"
            done
        done
    done
}

check_user() {
    if [ "$(id -u)" != 0 ] && [ "$(id -un)" != "$RUN_USER" ]; then
        die "run as root or as $RUN_USER (the nodes run as $RUN_USER)"
    fi
    [ -x "$RABBITMQ_BIN/rabbitmq-server" ] || die "no rabbitmq-server in $RABBITMQ_BIN"
}

# The environment of node N's server and of rabbitmqctl aimed at it, one VAR=value a line.
# Both run with exactly this (env -i), so nothing from the caller's shell or from
# /etc/rabbitmq leaks in: RABBITMQ_CONF_ENV_FILE replaces /etc/rabbitmq/rabbitmq-env.conf
# (whose NODENAME=rabbit@localhost would otherwise apply), RABBITMQ_CONFIG_FILE replaces
# /etc/rabbitmq/rabbitmq.conf (which pins the AMQP listener to 5672), and conf.d, the
# advanced config and the motd point into the node's own dir too. HOME holds the cluster's
# .erlang.cookie, which both the server and the CLI read. ERL_EPMD_ADDRESS and the
# loopback-only distribution interface are the standard node's settings.
node_env() {
    local n=$1 dir
    dir=$(node_dir "$n")
    cat <<ENV
PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
HOME=$(cookie_home)
LANG=C.UTF-8
LC_ALL=C.UTF-8
ERL_EPMD_ADDRESS=127.0.0.1
ERL_FLAGS=-kernel inet_dist_use_interface {127,0,0,1}
ERL_CRASH_DUMP=$dir/log/erl_crash.dump
RABBITMQ_CONF_ENV_FILE=$dir/rabbitmq-env.conf
RABBITMQ_NODENAME=$(node_name "$n")
RABBITMQ_CONFIG_FILE=$dir/rabbitmq.conf
RABBITMQ_CONFIG_FILES=$dir/conf.d/*.conf
RABBITMQ_ADVANCED_CONFIG_FILE=$dir/advanced.config
RABBITMQ_MOTD_FILE=$dir/motd
RABBITMQ_ENABLED_PLUGINS_FILE=$dir/enabled_plugins
RABBITMQ_DIST_PORT=$(dist_port "$n")
RABBITMQ_MNESIA_BASE=$dir/mnesia
RABBITMQ_MNESIA_DIR=$dir/mnesia/$(node_name "$n")
RABBITMQ_LOG_BASE=$dir/log
RABBITMQ_PID_FILE=$(pid_file "$n")
RABBITMQ_CTL_DIST_PORT_MIN=$CTL_PORT_MIN
RABBITMQ_CTL_DIST_PORT_MAX=$((CTL_PORT_MIN + 19))
ENV
}

# Sets NODE_CMD to the prefix that runs a program as the nodes' user with node N's
# environment only.
node_command() {
    local n=$1
    local -a env_vars
    mapfile -t env_vars < <(node_env "$n")
    NODE_CMD=()
    if [ "$(id -u)" = 0 ]; then
        NODE_CMD=(runuser -u "$RUN_USER" --)
    fi
    NODE_CMD+=(env -i "${env_vars[@]}")
}

# rabbitmqctl against node N, with the cluster's cookie (through HOME) and a time limit.
ctl() {
    local n=$1
    shift
    node_command "$n"
    (cd "$(node_dir "$n")" 2>/dev/null || cd /; timeout -k 5 "$CTL_LIMIT" \
        "${NODE_CMD[@]}" "$RABBITMQ_BIN/rabbitmqctl" -n "$(node_name "$n")" "$@")
}

# The pid of node N's Erlang VM, if it runs. The pid file is trusted only when that pid is a
# beam.smp whose environment is node N's (after a reboot a stale pid file may hold the pid of
# anything); without one, the VMs are searched by that environment (a node writes its pid
# file a moment after it starts). Never another node's VM, nor a node of the same name run
# from another state dir: both its node name and its env file must match.
node_pid() {
    local n=$1 pid file
    file=$(pid_file "$n")
    if [ -f "$file" ]; then
        pid=$(tr -dc '0-9' <"$file" 2>/dev/null || true)
        if [ -n "$pid" ] && is_node_vm "$pid" "$n"; then
            echo "$pid"
            return 0
        fi
    fi
    for file in /proc/[0-9]*/comm; do
        pid=${file#/proc/}
        pid=${pid%/comm}
        if is_node_vm "$pid" "$n"; then
            echo "$pid"
            return 0
        fi
    done
    return 1
}

is_node_vm() {
    local pid=$1 n=$2 comm="" env
    { read -r comm <"/proc/$pid/comm"; } 2>/dev/null || return 1
    [ "$comm" = beam.smp ] || return 1
    env=$(tr '\0' '\n' <"/proc/$pid/environ" 2>/dev/null) || return 1
    grep -qxF "RABBITMQ_NODENAME=$(node_name "$n")" <<<"$env" \
        && grep -qxF "RABBITMQ_CONF_ENV_FILE=$(node_dir "$n")/rabbitmq-env.conf" <<<"$env"
}

is_running() { node_pid "$1" >/dev/null; }

# Whether node N has ever been initialised (a node with data rejoins its cluster on boot; a
# blank one discovers its peers from the config).
has_data() { [ -d "$(node_dir "$1")/mnesia/$(node_name "$1")" ]; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# What node N wrote while it started this time (its startup output since the last start,
# where a boot failure names its cause at the top), then the end of its log.
log_tail() {
    local n=$1 section lines
    if [ -s "$(startup_log "$n")" ]; then
        section=$(awk '/^=== .* start$/ { text = "" } { text = text $0 "\n" } END { printf "%s", text }' \
            "$(startup_log "$n")")
        lines=$(printf '%s\n' "$section" | wc -l)
        printf -- '--- %s, this start\n' "$(startup_log "$n")" >&2
        if [ "$lines" -le 45 ]; then
            printf '%s\n' "$section" >&2
        else
            printf '%s\n' "$section" | head -n 25 >&2
            printf '[... %s lines ...]\n' "$((lines - 40))" >&2
            printf '%s\n' "$section" | tail -n 15 >&2
        fi
    fi
    if [ -s "$(log_file "$n")" ]; then
        printf -- '--- last lines of %s\n' "$(log_file "$n")" >&2
        tail -n 30 "$(log_file "$n")" >&2
    fi
}

# Node N's view of the cluster: cluster_status as JSON in CLUSTER_JSON; fails when N does
# not answer.
cluster_view() {
    CLUSTER_JSON=$(ctl "$1" -q cluster_status --formatter json 2>/dev/null)
}

# The running nodes as node N sees them, one number a line (nothing if N does not answer).
running_as_seen_by() {
    cluster_view "$1" || return 0
    nodes_in_json_list running_nodes "$CLUSTER_JSON"
}

disk_nodes_as_seen_by() {
    cluster_view "$1" || return 0
    nodes_in_json_list disk_nodes "$CLUSTER_JSON"
}

# The cluster's node numbers in one list of cluster_status's JSON output.
nodes_in_json_list() {
    local key=$1 json=$2 list
    list=$(printf '%s' "$json" | sed -n "s/.*\"$key\":\[\([^]]*\)\].*/\1/p")
    printf '%s' "$list" | grep -o "\"${NODE_PREFIX}[0-9]*@${HOST}\"" \
        | sed "s/\"${NODE_PREFIX}\([0-9]*\)@.*/\1/" | sort -n || true
}

# --- files -----------------------------------------------------------------------------------

# The state dir, the shared cookie (once) and each node's files (every start, so changed
# settings apply). Data and logs belong to the nodes' user.
prepare() {
    local n dir cookie
    if [ -e "$STATE_DIR" ] && [ ! -e "$STATE_DIR/$MARKER" ] \
        && [ -n "$(ls -A "$STATE_DIR" 2>/dev/null)" ]; then
        die "$STATE_DIR exists and was not made by this script (no $MARKER); pick another SYNCGATE_CLUSTER_DIR"
    fi
    mkdir -p "$STATE_DIR"
    touch "$STATE_DIR/$MARKER"
    mkdir -p "$(cookie_home)"
    cookie="$(cookie_home)/.erlang.cookie"
    if [ ! -s "$cookie" ]; then
        say "generating the cluster's Erlang cookie in $cookie"
        (umask 077 && od -An -N24 -tx1 /dev/urandom | tr -d ' \n' | tr 'a-f' 'A-F' >"$cookie")
    fi
    for n in "${NODES[@]}"; do
        dir=$(node_dir "$n")
        mkdir -p "$dir/log" "$dir/mnesia" "$dir/conf.d"
        write_node_files "$n"
    done
    if [ "$(id -u)" = 0 ]; then
        chown -R "$RUN_USER:$RUN_USER" "$STATE_DIR"
    fi
    chmod 750 "$STATE_DIR"
    chmod 700 "$(cookie_home)"
    chmod 400 "$cookie"
}

write_node_files() {
    local n=$1 dir i
    dir=$(node_dir "$n")
    # For people who want to run the CLI by hand: `RABBITMQ_CONF_ENV_FILE=<this file>
    # HOME=<state dir>/home rabbitmqctl status` targets this node. The script itself passes
    # the same variables explicitly.
    {
        echo "# Written by scripts/cluster.sh for $(node_name "$n"); rewritten on every start."
        node_env "$n" | while IFS= read -r line; do
            printf 'export %s=%q\n' "${line%%=*}" "${line#*=}"
        done
    } >"$dir/rabbitmq-env.conf"
    {
        echo "# Written by scripts/cluster.sh for $(node_name "$n"); rewritten on every start."
        echo "listeners.tcp.local = 127.0.0.1:$(amqp_port "$n")"
        echo "management.tcp.port = $(management_port "$n")"
        echo "management.tcp.ip = 127.0.0.1"
        echo "prometheus.tcp.port = $(prometheus_port "$n")"
        echo "prometheus.tcp.ip = 127.0.0.1"
        # One name for the whole cluster (by default each node reports its own node name
        # and host): the management UI's header and Prometheus' rabbitmq_identity_info label.
        echo "cluster_name = syncgate-cluster"
        # Cluster formation: classic_config lists the three nodes. A blank node takes a
        # lock (global, over the listed nodes), looks for a listed peer that runs and joins
        # it; with none running it retries (discovery_retry_limit times, 0.5 s apart) and
        # boots as a cluster of one. So the first start boots node 1 alone, then nodes 2
        # and 3 together: both find node 1 and join it at boot, one after the other under
        # that lock, with no stop_app / reset / join_cluster / start_app round (a second
        # boot of the app on each). Nodes that have data never run discovery: they rejoin
        # the peers they knew, so restarts and start-node need nothing from this list.
        # join_cluster remains the repair path (join_if_alone).
        echo "cluster_formation.peer_discovery_backend = classic_config"
        for i in "${NODES[@]}"; do
            echo "cluster_formation.classic_config.nodes.$i = $(node_name "$i")"
        done
        # Only blank nodes retry, and this script starts them when their seed already runs:
        # 3 tries instead of 10 spare node 1 the 5 s it would otherwise wait for peers that
        # are started after it on purpose.
        echo "cluster_formation.discovery_retry_limit = 3"
    } >"$dir/rabbitmq.conf"
    echo "[rabbitmq_management,rabbitmq_prometheus]." >"$dir/enabled_plugins"
}

# --- starting --------------------------------------------------------------------------------

LAUNCHERS=()

# Start node N's server in the background as the nodes' user, in a session of its own (so a
# Ctrl-C in the caller's terminal does not reach it), with no descriptor of the caller's
# open: a caller reading this script's output through a pipe must not wait for the broker.
launch() {
    local n=$1
    rm -f "$(pid_file "$n")" # stale if there is one: the node does not run
    say "starting $(node_name "$n") (amqp :$(amqp_port "$n"), management :$(management_port "$n"), prometheus :$(prometheus_port "$n"))"
    printf '=== %s start\n' "$(date '+%F %T')" >>"$(startup_log "$n")"
    node_command "$n"
    (cd "$(node_dir "$n")" && exec setsid "${NODE_CMD[@]}" "$RABBITMQ_BIN/rabbitmq-server") \
        </dev/null >>"$(startup_log "$n")" 2>&1 9>&- &
    LAUNCHERS[n]=$!
}

launcher_alive() {
    local pid=${LAUNCHERS[$1]:-}
    [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

# Wait until node N has booted: its AMQP port answers, then rabbitmqctl await_startup.
wait_booted() {
    local n=$1 deadline=$2 left
    while ! port_open "$(amqp_port "$n")"; do
        if ! is_running "$n" && ! launcher_alive "$n"; then
            say "$(node_name "$n") exited while starting"
            log_tail "$n"
            return 1
        fi
        if [ "$(now)" -ge "$deadline" ]; then
            say "$(node_name "$n") did not open its AMQP port $(amqp_port "$n") within ${START_TIMEOUT}s"
            log_tail "$n"
            return 1
        fi
        sleep 1
    done
    left=$((deadline - $(now)))
    [ "$left" -gt 5 ] || left=5
    if ! ctl "$n" -q await_startup --timeout "$left" >/dev/null 2>&1; then
        say "$(node_name "$n") did not finish booting"
        log_tail "$n"
        return 1
    fi
}

# Fail before starting anything if a port of a node about to start is taken.
check_ports_free() {
    local n port
    for n in "$@"; do
        for port in "$(amqp_port "$n")" "$(management_port "$n")" "$(prometheus_port "$n")" \
            "$(dist_port "$n")"; do
            if port_open "$port"; then
                die "port $port (node $n) is already in use by something else"
            fi
        done
    done
}

# Start the given nodes together and wait for all of them to boot.
launch_and_wait() {
    local deadline=$1 n pid failed=0
    local -a waits=()
    shift
    [ $# -gt 0 ] || return 0
    for n in "$@"; do launch "$n"; done
    # The waits run side by side (each rabbitmqctl is a VM of its own that takes a second or
    # two to boot). Only their pids are waited for: the nodes are background jobs too.
    for n in "$@"; do
        wait_booted "$n" "$deadline" &
        waits+=($!)
    done
    for pid in "${waits[@]}"; do wait "$pid" || failed=1; done
    return "$failed"
}

# Whether the cluster lists all three nodes as running. One node's view is the cluster's (the
# membership is one replicated table), and each rabbitmqctl costs a second or two of CPU on a
# busy machine: node 1 is asked, or the first running node after it.
cluster_complete() {
    local n
    for n in "${NODES[@]}"; do
        if is_running "$n"; then
            [ "$(running_as_seen_by "$n" | tr '\n' ' ')" = "1 2 3 " ]
            return
        fi
    done
    return 1
}

# A blank node that came up as a cluster of its own (it found no peer in time) is joined to
# node 1 explicitly. Only nodes started blank by this very run qualify: nothing that had data
# is ever reset.
join_if_alone() {
    local n=$1
    cluster_view "$n" || die "$(node_name "$n") does not answer cluster_status"
    if nodes_in_json_list disk_nodes "$CLUSTER_JSON" | grep -qx 1; then
        return 0
    fi
    say "$(node_name "$n") booted without joining; joining it to $(node_name 1) explicitly"
    ctl "$n" -q stop_app >/dev/null
    ctl "$n" -q reset >/dev/null
    ctl "$n" -q join_cluster "$(node_name 1)" >/dev/null
    ctl "$n" -q start_app >/dev/null
}

wait_cluster() {
    local deadline=$1 n
    until cluster_complete; do
        if [ "$(now)" -ge "$deadline" ]; then
            say "the cluster did not form within ${START_TIMEOUT}s; as each node sees it:"
            for n in "${NODES[@]}"; do
                say "  $(node_name "$n"): running $(running_as_seen_by "$n" | tr '\n' ' ')"
            done
            return 1
        fi
        sleep 1
    done
}

cmd_start() {
    local fresh=0 begin deadline n
    local -a with_data=() blank=() running=()
    while [ $# -gt 0 ]; do
        case "$1" in
            --fresh) fresh=1 ;;
            *) usage ;;
        esac
        shift
    done
    begin=$(now)
    deadline=$((begin + START_TIMEOUT))
    if [ "$fresh" = 1 ]; then
        stop_all
        purge
    fi
    prepare
    for n in "${NODES[@]}"; do
        if is_running "$n"; then
            running+=("$n")
        elif has_data "$n"; then
            with_data+=("$n")
        else
            blank+=("$n")
        fi
    done
    if [ ${#running[@]} = 3 ]; then
        say "all three nodes already run"
    fi
    check_ports_free "${with_data[@]}" "${blank[@]}"
    # Nodes with data first, together: each waits for the peers it knew (in any order).
    launch_and_wait "$deadline" "${with_data[@]}"
    # Then blank nodes. With no node running yet the first one boots alone (the cluster's
    # seed), the rest together after it, so that they find it.
    if [ ${#blank[@]} -gt 0 ]; then
        if [ $((${#running[@]} + ${#with_data[@]})) = 0 ]; then
            launch_and_wait "$deadline" "${blank[0]}"
            launch_and_wait "$deadline" "${blank[@]:1}"
            for n in "${blank[@]:1}"; do join_if_alone "$n"; done
        else
            launch_and_wait "$deadline" "${blank[@]}"
        fi
    fi
    wait_cluster "$deadline"
    say "cluster up: $(node_name 1), $(node_name 2), $(node_name 3) running, in $(($(now) - begin))s"
}

cmd_start_node() {
    local n=$1 begin deadline other asked
    check_node_number "$n"
    begin=$(now)
    deadline=$((begin + START_TIMEOUT))
    if ! has_data "$n"; then
        die "$(node_name "$n") has never run (no data in $(node_dir "$n")); use start"
    fi
    prepare
    if is_running "$n"; then
        say "$(node_name "$n") already runs"
    else
        check_ports_free "$n"
        launch_and_wait "$deadline" "$n"
    fi
    # A member again: a running peer lists it as running (or, with no peer running, it
    # lists itself; it would not have booted without the peers it knew, though).
    asked=$n
    for other in "${NODES[@]}"; do
        if [ "$other" != "$n" ] && is_running "$other"; then
            asked=$other
            break
        fi
    done
    until running_as_seen_by "$asked" | grep -qx "$n"; do
        if [ "$(now)" -ge "$deadline" ]; then
            die "$(node_name "$asked") does not list $(node_name "$n") as running"
        fi
        sleep 1
    done
    say "$(node_name "$n") runs and is a member again, in $(($(now) - begin))s"
}

# --- stopping --------------------------------------------------------------------------------

# Stop node N cleanly (rabbitmqctl stop, which waits for the VM to exit); a node that does
# not stop within the limit gets SIGTERM (the VM shuts down gracefully), then SIGKILL.
stop_node() {
    local n=$1 pid deadline
    pid=$(node_pid "$n") || return 0
    say "stopping $(node_name "$n") (pid $pid)"
    if [ -f "$(pid_file "$n")" ]; then
        ctl "$n" -q stop "$(pid_file "$n")" >/dev/null 2>&1 || true
    else
        ctl "$n" -q shutdown >/dev/null 2>&1 || true
    fi
    deadline=$(($(now) + STOP_TIMEOUT))
    while kill -0 "$pid" 2>/dev/null; do
        if [ "$(now)" -ge "$deadline" ]; then
            say "$(node_name "$n") did not stop within ${STOP_TIMEOUT}s; sending SIGTERM"
            kill -TERM "$pid" 2>/dev/null || true
            sleep 15
            if kill -0 "$pid" 2>/dev/null; then
                say "$(node_name "$n") still runs; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
            fi
            break
        fi
        sleep 0.5
    done
    while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
    rm -f "$(pid_file "$n")"
}

stop_all() {
    local n failed=0
    local -a jobs=()
    for n in "${NODES[@]}"; do
        stop_node "$n" &
        jobs+=($!)
    done
    for n in "${jobs[@]}"; do wait "$n" || failed=1; done
    for n in "${NODES[@]}"; do
        if is_running "$n"; then
            say "$(node_name "$n") still runs"
            failed=1
        fi
    done
    return "$failed"
}

purge() {
    [ -e "$STATE_DIR" ] || return 0
    if [ ! -e "$STATE_DIR/$MARKER" ] && [ -n "$(ls -A "$STATE_DIR" 2>/dev/null)" ]; then
        die "$STATE_DIR was not made by this script (no $MARKER); not deleting it"
    fi
    say "deleting $STATE_DIR"
    rm -rf "$STATE_DIR"
}

cmd_stop() {
    local purge_dir=0
    while [ $# -gt 0 ]; do
        case "$1" in
            --purge) purge_dir=1 ;;
            *) usage ;;
        esac
        shift
    done
    stop_all
    say "all three nodes are stopped"
    [ "$purge_dir" = 0 ] || purge
}

# --- the rest --------------------------------------------------------------------------------

cmd_kill() {
    local n=$1 pid
    check_node_number "$n"
    pid=$(node_pid "$n") || die "$(node_name "$n") does not run"
    say "kill -9 $(node_name "$n") (pid $pid)"
    kill -KILL "$pid"
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
}

cmd_status() {
    local n pid seen=""
    for n in "${NODES[@]}"; do
        if pid=$(node_pid "$n"); then
            printf '%-24s running  pid %-8s amqp 127.0.0.1:%s  management :%s  prometheus :%s\n' \
                "$(node_name "$n")" "$pid" "$(amqp_port "$n")" "$(management_port "$n")" \
                "$(prometheus_port "$n")"
            [ -n "$seen" ] || seen=$n
        else
            printf '%-24s stopped\n' "$(node_name "$n")"
        fi
    done
    if [ -n "$seen" ]; then
        printf 'cluster members (as %s sees them): %s; running: %s\n' "$(node_name "$seen")" \
            "$(disk_nodes_as_seen_by "$seen" | sed "s/^/${NODE_PREFIX}/" | paste -sd, -)" \
            "$(running_as_seen_by "$seen" | sed "s/^/${NODE_PREFIX}/" | paste -sd, -)"
    fi
}

cmd_urls() {
    local n urls=()
    for n in "${NODES[@]}"; do
        urls+=("amqp://guest:guest@127.0.0.1:$(amqp_port "$n")/")
    done
    (IFS=,; echo "${urls[*]}")
}

main() {
    [ $# -gt 0 ] || usage
    local command=$1
    shift
    check_settings
    case "$command" in
        urls | help | -h | --help) ;;
        *) check_user ;;
    esac
    case "$command" in
        start | stop | kill | start-node) take_lock ;;
    esac
    case "$command" in
        start) cmd_start "$@" ;;
        stop) cmd_stop "$@" ;;
        status) cmd_status ;;
        urls) cmd_urls ;;
        kill) [ $# = 1 ] || usage; cmd_kill "$1" ;;
        start-node) [ $# = 1 ] || usage; cmd_start_node "$1" ;;
        ctl)
            [ $# -ge 2 ] || usage
            check_node_number "$1"
            [ -d "$(node_dir "$1")" ] || die "no state for node $1 yet; run start first"
            local n=$1
            shift
            ctl "$n" "$@"
            ;;
        -h | --help | help) help ;;
        *) usage ;;
    esac
}

main "$@"
