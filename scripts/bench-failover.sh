#!/usr/bin/env bash
# What a Sentinel failover costs through haproxy-rs and through HAProxy: a planned (SENTINEL FAILOVER) and
# a kill (SIGKILL of the master) failover of the lab, under `haproxy-rs bench` load with tracked writes.
#
#   scripts/bench-failover.sh        lab up (scripts/lab.sh), build release, start both proxies, 4 runs
#
# Each run writes $OUT/<target>-<kind>.{txt,json,csv,html}: acknowledged writes lost, stale reads, the
# error window, the time until throughput is back to 90%, the worst latency, the sentinel events.
# Environment: TARGETS ("haproxy-rs haproxy"), KINDS ("planned kill"), DURATION (25s), FAILOVER_AT (5s),
# CLIENTS (20), RATIO (1:1), OUT (.lab/failover), REQUEST_TIMEOUT (15s: longer than haproxy-rs holds writes). To run against another copy of the lab: LAB_SH,
# SENTINELS (the lab's three, comma-separated; the first triggers the planned failover, all are listened
# to), HAPROXY_CFG (config/haproxy.cfg), HAPROXY_PORT (16379), RS_CONFIG (config/haproxy-rs.toml),
# RS_PORT (6379). Everything started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TARGETS=${TARGETS:-haproxy-rs haproxy}
KINDS=${KINDS:-planned kill}
DURATION=${DURATION:-25s}
FAILOVER_AT=${FAILOVER_AT:-5s}
CLIENTS=${CLIENTS:-20}
RATIO=${RATIO:-1:1}
OUT=${OUT:-$ROOT/.lab/failover}
LAB_SH=${LAB_SH:-$ROOT/scripts/lab.sh}
SENTINELS=${SENTINELS:-127.0.0.1:26391,127.0.0.1:26392,127.0.0.1:26393}
HAPROXY_CFG=${HAPROXY_CFG:-config/haproxy.cfg}
HAPROXY_PORT=${HAPROXY_PORT:-16379}
RS_CONFIG=${RS_CONFIG:-config/haproxy-rs.toml}
RS_PORT=${RS_PORT:-6379}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs
# shellcheck source=lib/children.sh
. "$ROOT/scripts/lib/children.sh"

# wait_master PORT: 6 consecutive connections through the proxy reach a master (HAProxy needs `fall 2`
# failed checks to drop a replica; haproxy-rs needs its first topology).
wait_master() {
    local port=$1 streak=0 i
    for ((i = 0; i < 600 && streak < 6; i++)); do
        if timeout 2 redis-cli -p "$port" INFO replication 2>/dev/null | grep -q '^role:master'; then
            streak=$((streak + 1))
        else
            streak=0
            sleep 0.1
        fi
    done
    [ "$streak" -ge 6 ] || die "nothing on $port routes to the master after 60s"
}

# start NAME PORT CMD...: runs CMD in the background, logging to $OUT/NAME.log.
start() {
    local name=$1 port=$2
    shift 2
    "$@" >"$OUT/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_master "$port"
    log "$name up on $port"
}

mkdir -p "$OUT"
bash "$LAB_SH" up
log "cargo build --release"
timeout 1800 cargo build --release --locked --quiet
declare -A PORT=([haproxy-rs]=$RS_PORT [haproxy]=$HAPROXY_PORT)
for target in $TARGETS; do
    case $target in
        haproxy-rs) start haproxy-rs "$RS_PORT" "$BIN" run -c "$RS_CONFIG" ;;
        haproxy) start haproxy "$HAPROXY_PORT" haproxy -db -f "$HAPROXY_CFG" ;;
        *) die "unknown target $target (haproxy-rs, haproxy)" ;;
    esac
done

for kind in $KINDS; do
    for target in $TARGETS; do
        bash "$LAB_SH" up # restarts a killed master (it rejoins as a replica) and waits until ready
        wait_master "${PORT[$target]}"
        name=$target-$kind
        log "run $name"
        timeout 300 "$BIN" bench --target "127.0.0.1:${PORT[$target]}" --sentinel "$SENTINELS" \
            --failover "$kind" --failover-at "$FAILOVER_AT" -d "$DURATION" -c "$CLIENTS" --ratio "$RATIO" \
            --timeout "${REQUEST_TIMEOUT:-15s}" --json "$OUT/$name.json" --csv "$OUT/$name.csv" --html "$OUT/$name.html" \
            | tee "$OUT/$name.txt"
    done
done
bash "$LAB_SH" up
log "reports in $OUT"
grep -H -E 'lost|stale|error window|back to 90%' "$OUT"/*.txt || true
