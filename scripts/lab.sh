#!/usr/bin/env bash
# Local Redis Sentinel lab on loopback: one master, two replicas, three sentinels (quorum 2).
#
#   scripts/lab.sh up       install redis if missing, start the lab daemonized, wait until it is ready
#   scripts/lab.sh status   print every instance's role and what the sentinels say
#   scripts/lab.sh down     stop what `up` started (by pidfile) and remove .lab/
#   scripts/lab.sh install  only install redis-server, redis-sentinel and redis-tools when missing
#
# And a Redis Cluster on loopback: three masters with a replica each, for the proxy's cluster mode.
#
#   scripts/lab.sh cluster [up]   start the six nodes (6401-6406, cluster bus 16401-16406), create the
#                                 cluster if they are new, wait until every slot is served
#   scripts/lab.sh cluster status print every node's role and slots, and the cluster state
#   scripts/lab.sh cluster down   stop the cluster's nodes and remove .lab/cluster/ (`down` stops them too)
#
# The same topologies are described by compose/docker-compose.yml and config/haproxy-rs.toml, and by
# compose/cluster.yml and config/cluster.toml; the ports stay clear of the proxy's 6379/6380/8404. State
# (configs, logs, pidfiles) lives in .lab/ at the repo root. Every command is idempotent: `up` starts only
# the instances that do not answer, reusing their configs, which Sentinel and Redis Cluster rewrite after
# a failover.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LAB_DIR=${LAB_DIR:-$ROOT/.lab}
MASTER_NAME=mymaster
MASTER_PORT=6391
REPLICA_PORTS=(6392 6393)
SENTINEL_PORTS=(26391 26392 26393)
QUORUM=2
DOWN_AFTER_MS=5000
FAILOVER_TIMEOUT_MS=10000
# Seconds `up` waits for replication and sentinel discovery.
READY_TIMEOUT=${LAB_READY_TIMEOUT:-60}
CLUSTER_DIR=$LAB_DIR/cluster
# redis-cli --cluster create makes the first third of them masters; each bus port is port + 10000.
CLUSTER_PORTS=(6401 6402 6403 6404 6405 6406)
CLUSTER_REPLICAS=1
# How long a master may be unreachable before its replica is promoted (Redis's default is 15000).
CLUSTER_NODE_TIMEOUT_MS=5000

log() { printf 'lab: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

# Installs the Debian packages whose binaries are missing. A policy-rc.d that denies service starts keeps
# the packages' own redis (6379) and sentinel (26379) from starting: 6379 belongs to the proxy.
install_redis() {
    local missing=()
    command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
    command -v redis-sentinel >/dev/null 2>&1 || missing+=(redis-sentinel)
    command -v redis-cli >/dev/null 2>&1 || missing+=(redis-tools)
    [ "${#missing[@]}" -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get to install them"
    log "installing ${missing[*]}"
    local policy=/usr/sbin/policy-rc.d created_policy=0
    if [ ! -e "$policy" ]; then
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$policy" >/dev/null
        as_root chmod +x "$policy"
        created_policy=1
    fi
    local rc=0
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq || rc=$?
    if [ "$rc" -eq 0 ]; then
        as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            "${missing[@]}" || rc=$?
    fi
    [ "$created_policy" -eq 1 ] && as_root rm -f "$policy"
    [ "$rc" -eq 0 ] || die "apt-get failed ($rc)"
}

cli() {
    local port=$1
    shift
    timeout 5 redis-cli -h 127.0.0.1 -p "$port" --raw "$@" 2>/dev/null
}

answers() { [ "$(cli "$1" PING || true)" = PONG ]; }

redis_conf() {
    local port=$1 replicaof=$2 dir=$LAB_DIR/$1
    cat <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/pid
logfile $dir/log
dir $dir
save ""
appendonly no
repl-diskless-sync-delay 0
$replicaof
CONF
}

sentinel_conf() {
    local port=$1 dir=$LAB_DIR/$1
    cat <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/pid
logfile $dir/log
dir $dir
sentinel resolve-hostnames no
sentinel monitor $MASTER_NAME 127.0.0.1 $MASTER_PORT $QUORUM
sentinel down-after-milliseconds $MASTER_NAME $DOWN_AFTER_MS
sentinel failover-timeout $MASTER_NAME $FAILOVER_TIMEOUT_MS
sentinel parallel-syncs $MASTER_NAME 1
CONF
}

cluster_conf() {
    local port=$1 dir=$CLUSTER_DIR/$1
    cat <<CONF
port $port
bind 127.0.0.1
daemonize yes
pidfile $dir/pid
logfile $dir/log
dir $dir
save ""
appendonly no
cluster-enabled yes
cluster-config-file nodes.conf
cluster-node-timeout $CLUSTER_NODE_TIMEOUT_MS
CONF
}

# start_instance PORT KIND(server|sentinel|cluster) [replicaof line]: writes the config only if absent.
start_instance() {
    local port=$1 kind=$2 replicaof=${3:-} dir=$LAB_DIR/$1 bin=redis-$2
    if [ "$kind" = cluster ]; then
        dir=$CLUSTER_DIR/$port
        bin=redis-server
    fi
    if answers "$port"; then
        if [ -f "$dir/pid" ]; then
            log "$kind $port already running"
            return 0
        fi
        die "port $port answers PING but was not started by this lab; stop it first"
    fi
    mkdir -p "$dir"
    if [ ! -f "$dir/$kind.conf" ]; then
        case $kind in
        sentinel) sentinel_conf "$port" ;;
        cluster) cluster_conf "$port" ;;
        *) redis_conf "$port" "$replicaof" ;;
        esac >"$dir/$kind.conf"
    fi
    "$bin" "$dir/$kind.conf" || die "$bin $port did not start; see $dir/log"
    local i
    for ((i = 0; i < 100; i++)); do
        answers "$port" && { log "started $kind $port"; return 0; }
        sleep 0.1
    done
    die "$kind $port does not answer PING; see $dir/log"
}

# value_after KEY: reads redis-cli --raw key/value lines on stdin, prints the value(s) following KEY.
value_after() { awk -v k="$1" 'prev == k { print } { prev = $0 }'; }

sentinel_master() { cli "$1" SENTINEL get-master-addr-by-name "$MASTER_NAME" | paste -sd: -; }

# True when every sentinel names the same live master that has 2 online replicas, and every sentinel
# sees 2 healthy replicas and 2 other sentinels.
lab_ready() {
    local want="" s addr healthy others
    for s in "${SENTINEL_PORTS[@]}"; do
        addr=$(sentinel_master "$s" || true)
        [ -n "$addr" ] || return 1
        [ -z "$want" ] && want=$addr
        [ "$addr" = "$want" ] || return 1
        healthy=$(cli "$s" SENTINEL replicas "$MASTER_NAME" | value_after flags |
            grep -cv 'disconnected\|s_down' || true)
        [ "$healthy" -eq "${#REPLICA_PORTS[@]}" ] || return 1
        others=$(cli "$s" SENTINEL master "$MASTER_NAME" | value_after num-other-sentinels || true)
        [ "$others" = "$((${#SENTINEL_PORTS[@]} - 1))" ] || return 1
    done
    local online
    online=$(cli "${want#*:}" INFO replication | grep -c '^slave[0-9]*:.*state=online' || true)
    [ "$online" -eq "${#REPLICA_PORTS[@]}" ]
}

cmd_up() {
    install_redis
    mkdir -p "$LAB_DIR"
    start_instance "$MASTER_PORT" server
    local p
    for p in "${REPLICA_PORTS[@]}"; do
        start_instance "$p" server "replicaof 127.0.0.1 $MASTER_PORT"
    done
    for p in "${SENTINEL_PORTS[@]}"; do
        start_instance "$p" sentinel
    done
    local deadline=$((SECONDS + READY_TIMEOUT))
    until lab_ready; do
        [ "$SECONDS" -lt "$deadline" ] || { cmd_status; die "lab not ready after ${READY_TIMEOUT}s"; }
        sleep 0.5
    done
    log "ready: master $(sentinel_master "${SENTINEL_PORTS[0]}"), sentinels ${SENTINEL_PORTS[*]}"
}

cmd_status() {
    local p role
    for p in "$MASTER_PORT" "${REPLICA_PORTS[@]}"; do
        role=$(cli "$p" ROLE | head -n1 || true)
        printf '127.0.0.1:%s\t%s\n' "$p" "${role:-down}"
    done
    for p in "${SENTINEL_PORTS[@]}"; do
        role=$(sentinel_master "$p" || true)
        printf '127.0.0.1:%s\tsentinel, master %s\n' "$p" "${role:-unknown (down)}"
    done
}

# stop_instances DIR: stops every instance with a pidfile in DIR/PORT/.
stop_instances() {
    local pidfile pid port i
    for pidfile in "$1"/*/pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        port=$(basename "$(dirname "$pidfile")")
        # Only a redis process still serving this port: a stale pidfile may name a reused pid.
        tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q "redis.*:$port\b" || continue
        kill "$pid" 2>/dev/null || continue
        for ((i = 0; i < 50; i++)); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
}

cmd_down() {
    if [ ! -d "$LAB_DIR" ]; then
        log "no $LAB_DIR; nothing to stop"
        return 0
    fi
    stop_instances "$CLUSTER_DIR"
    stop_instances "$LAB_DIR"
    rm -rf "$LAB_DIR"
    log "stopped; removed $LAB_DIR"
}

# cluster_info PORT FIELD: one field of the node's CLUSTER INFO (empty when it does not answer).
cluster_info() { { cli "$1" CLUSTER INFO || true; } | tr -d '\r' | awk -F: -v k="$2" '$1 == k { print $2 }'; }

# A node that knows only itself and serves no slot: new, never part of a cluster.
cluster_node_new() {
    [ "$(cluster_info "$1" cluster_known_nodes)" = 1 ] && [ "$(cluster_info "$1" cluster_slots_assigned)" = 0 ]
}

# True when every node says the cluster is ok with every slot assigned, and sees every node, the masters
# serving slots and the replicas, all connected and none failing.
cluster_ready() {
    local n=${#CLUSTER_PORTS[@]} masters=$((${#CLUSTER_PORTS[@]} / (CLUSTER_REPLICAS + 1))) p nodes
    for p in "${CLUSTER_PORTS[@]}"; do
        [ "$(cluster_info "$p" cluster_state)" = ok ] || return 1
        [ "$(cluster_info "$p" cluster_slots_assigned)" = 16384 ] || return 1
        [ "$(cluster_info "$p" cluster_known_nodes)" = "$n" ] || return 1
        nodes=$(cli "$p" CLUSTER NODES) || return 1
        [ "$(awk '$3 ~ /master/ && $3 !~ /fail/ && $8 == "connected" && NF > 8' <<<"$nodes" | wc -l)" \
            -eq "$masters" ] || return 1
        [ "$(awk '$3 ~ /slave/ && $3 !~ /fail/ && $8 == "connected"' <<<"$nodes" | wc -l)" \
            -eq "$((n - masters))" ] || return 1
    done
}

# The masters, by ROLE, as host:port,host:port.
cluster_masters() {
    local p
    for p in "${CLUSTER_PORTS[@]}"; do
        if [ "$({ cli "$p" ROLE || true; } | head -n1)" = master ]; then
            printf '127.0.0.1:%s\n' "$p"
        fi
    done | paste -sd, -
}

cmd_cluster_up() {
    install_redis
    mkdir -p "$CLUSTER_DIR"
    local p new=0 addrs=()
    for p in "${CLUSTER_PORTS[@]}"; do
        start_instance "$p" cluster
        addrs+=("127.0.0.1:$p")
    done
    for p in "${CLUSTER_PORTS[@]}"; do
        if cluster_node_new "$p"; then new=$((new + 1)); fi
    done
    if [ "$new" -eq "${#CLUSTER_PORTS[@]}" ]; then
        log "creating the cluster: ${#CLUSTER_PORTS[@]} nodes, $CLUSTER_REPLICAS replica(s) per master"
        redis-cli --cluster create "${addrs[@]}" \
            --cluster-replicas "$CLUSTER_REPLICAS" --cluster-yes >"$CLUSTER_DIR/create.log" 2>&1 ||
            die "redis-cli --cluster create failed; see $CLUSTER_DIR/create.log"
    elif [ "$new" -gt 0 ]; then
        die "$new node(s) are new and the others already form a cluster; run \`$0 cluster down\` first"
    fi
    local deadline=$((SECONDS + READY_TIMEOUT))
    until cluster_ready; do
        [ "$SECONDS" -lt "$deadline" ] || { cmd_cluster_status; die "cluster not ready after ${READY_TIMEOUT}s"; }
        sleep 0.5
    done
    local masters
    masters=$(cluster_masters)
    log "ready: masters $masters, each with $CLUSTER_REPLICAS replica(s); every slot served"
    cat >&2 <<HOWTO
lab: run the proxy in front (it follows the slot map and presents the cluster as one node):
  cargo run --release -- run -c config/cluster.toml
  # or: haproxy-rs run --cluster $masters --listen 127.0.0.1:6379 --stats 127.0.0.1:8404
  redis-cli -p 6379 mset a 1 b 2 c 3 && redis-cli -p 6379 mget a b c   # split by slot
  curl -s http://127.0.0.1:8404/stats.json | jq .cluster              # the slot map, redirections
HOWTO
}

cmd_cluster_status() {
    local p role detail
    for p in "${CLUSTER_PORTS[@]}"; do
        role=$({ cli "$p" ROLE || true; } | head -n1)
        case $role in
        master)
            detail=$({ cli "$p" CLUSTER NODES || true; } |
                awk '$3 ~ /myself/ { s = "slots"; for (i = 9; i <= NF; i++) s = s " " $i; print s }')
            ;;
        slave) detail="of $({ cli "$p" ROLE || true; } | sed -n '2p;3p' | paste -sd: -)" ;;
        *) detail="" ;;
        esac
        printf '127.0.0.1:%s\t%s %s\n' "$p" "${role:-down}" "$detail"
    done
    local state
    state=$(cluster_info "${CLUSTER_PORTS[0]}" cluster_state)
    printf 'cluster_state (by %s): %s\n' "${CLUSTER_PORTS[0]}" "${state:-unknown (down)}"
}

cmd_cluster_down() {
    if [ ! -d "$CLUSTER_DIR" ]; then
        log "no $CLUSTER_DIR; nothing to stop"
        return 0
    fi
    stop_instances "$CLUSTER_DIR"
    rm -rf "$CLUSTER_DIR"
    log "stopped the cluster; removed $CLUSTER_DIR"
}

cmd_cluster() {
    case "${1:-up}" in
    up) cmd_cluster_up ;;
    down) cmd_cluster_down ;;
    status) cmd_cluster_status ;;
    *)
        echo "usage: $0 cluster [up|down|status]" >&2
        exit 64
        ;;
    esac
}

case "${1:-}" in
up) cmd_up ;;
down) cmd_down ;;
status) cmd_status ;;
install) install_redis ;;
cluster) cmd_cluster "${2:-up}" ;;
*)
    echo "usage: $0 up|down|status|install|cluster [up|down|status]" >&2
    exit 64
    ;;
esac
