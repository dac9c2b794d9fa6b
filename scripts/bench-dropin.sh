#!/usr/bin/env bash
# What the stateful, "drop-in" features cost through haproxy-rs, next to HAProxy 2.6 in TCP mode (the peer:
# it passes every byte through, so MULTI/EXEC, pub/sub and streams work unchanged) and Redis directly, from
# one run on this machine, as ratios. Starts its own redis-server (one master; REPLICA=1 adds a replica),
# haproxy (a minimal TCP-mode config written here) and haproxy-rs (release build, static `--servers`), all
# on free loopback ports in a temp dir, then runs `haproxy-rs bench --compare haproxy-rs=..,haproxy=..,direct=..`
# for each workload and prints a Markdown table: ops/s, p50 and p99 per target, haproxy-rs / HAProxy and
# haproxy-rs / direct, medians over the rounds.
#
#   scripts/bench-dropin.sh
#   ROUNDS=3 DURATION=4s CLIENTS=20 scripts/bench-dropin.sh
#
# Workloads (TESTS): set and get (P=1, the baseline), tx (MULTI + TX_KEYS SETs + EXEC, one request),
# pubsub (even connections PUBLISH, odd ones subscribe to all 8 channels; ops are PUBLISH replies plus
# deliveries, latency mixes both: publication to delivery for a delivery), stream (even connections XADD,
# odd ones XREADGROUP/XACK/XAUTOCLAIM in a group; not blocking: `bench` has no blocking workload). WAIT is
# not measured: `bench` has no workload that sends it.
#
# Each round is one `bench --compare ... --rounds 1` per workload, the targets in rotating order, with its
# own JSON report: `--rounds N` in one call would merge the rounds into one report (mean throughput, pooled
# histogram) and keep the targets' order, while this table wants the median of each figure over the rounds.
# The stream key is deleted before each `--compare` so no round inherits an earlier round's backlog (within
# one, the targets follow each other on the same stream).
#
# Environment: ROUNDS (3); DURATION (5s) measured per target after WARMUP (1s); CLIENTS (50, at least 2);
# TESTS ("set get tx pubsub stream"); TX_KEYS (3) SETs per transaction; REPLICA (0; 1: a replica of the
# master, given to haproxy-rs too, which then reads from the master only, like HAProxy and direct);
# PROXY_THREADS (unset: haproxy-rs's default, half the cores; HAProxy uses its own default, one thread per
# core); BASE_PORT (21400), where the search for free loopback ports starts (6379-6406, 7001-7006 and
# 17000-17999 are always skipped); KEEP=1 keeps the work dir (logs, config, JSON reports). Needs
# redis-server, redis-cli, haproxy, python3 and cargo; installs nothing. Every process started here is
# stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-5s}
WARMUP=${WARMUP:-1s}
CLIENTS=${CLIENTS:-50}
TESTS=${TESTS:-set get tx pubsub stream}
TX_KEYS=${TX_KEYS:-3}
REPLICA=${REPLICA:-0}
BASE_PORT=${BASE_PORT:-21400}
KEEP=${KEEP:-0}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs
TARGETS=(haproxy-rs haproxy direct)
PIDS=()
BENCH_PID=
HAPROXY_VERSION=
NEXT_PORT=$BASE_PORT
WORK=
declare -A PORT=()

log() { printf 'bench-dropin: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local pid
    # timeout passes the TERM on to the bench it runs.
    [ -n "$BENCH_PID" ] && { kill "$BENCH_PID" 2>/dev/null || true; }
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    [ -n "$WORK" ] || return 0
    if [ "$KEEP" = 1 ]; then
        log "logs, config and reports kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# secs TIME: whole seconds (rounded up) of a bench duration such as 5s, 500ms or 2m.
secs() {
    case $1 in
        *ms) echo $(((${1%ms} + 999) / 1000)) ;;
        *s) echo "${1%s}" ;;
        *m) echo $((${1%m} * 60)) ;;
        *) die "cannot read the duration '$1' (use e.g. 5s, 500ms, 2m)" ;;
    esac
}

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# reserved PORT: ports other work on this machine uses.
reserved() { (($1 >= 6379 && $1 <= 6406)) || (($1 >= 7001 && $1 <= 7006)) || (($1 >= 17000 && $1 <= 17999)); }

# free_port NAME: the next port from NEXT_PORT that is not reserved and nothing listens on, as PORT[NAME].
free_port() {
    while reserved "$NEXT_PORT" || port_busy "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
        [ "$NEXT_PORT" -lt 65000 ] || die "no free port above $BASE_PORT"
    done
    PORT[$1]=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# wait_until NAME PID CHECK...: polls CHECK for 30 s; fails early if the process died.
wait_until() {
    local name=$1 pid=$2 i
    shift 2
    for ((i = 0; i < 300; i++)); do
        "$@" && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log"
        sleep 0.1
    done
    die "$name is not ready after 30s ($*); see $WORK/$name.log"
}

answers() { [ "$(timeout 2 redis-cli -p "$1" "${@:3}" 2>/dev/null || true)" = "$2" ]; }
replica_linked() { timeout 2 redis-cli -p "$1" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; }

# start NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log (sets LAST_PID).
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    LAST_PID=$!
    PIDS+=("$LAST_PID")
}

start_redis() {
    local name=$1
    shift
    free_port "$name"
    mkdir -p "$WORK/$name"
    start "$name" redis-server --port "${PORT[$name]}" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK/$name" "$@"
    wait_until "$name" "$LAST_PID" answers "${PORT[$name]}" PONG PING
    log "$name up on ${PORT[$name]}"
}

start_haproxy() {
    free_port haproxy
    cat >"$WORK/haproxy.cfg" <<EOF
# Minimal TCP mode: every byte to the master, as HAProxy is deployed in front of Redis.
defaults
    mode tcp
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    maxconn 10000

frontend redis
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend master

backend master
    server master 127.0.0.1:${PORT[direct]}
EOF
    haproxy -c -q -f "$WORK/haproxy.cfg" >"$WORK/haproxy-check.log" 2>&1 ||
        die "haproxy rejects its config; see $WORK/haproxy-check.log"
    start haproxy haproxy -db -f "$WORK/haproxy.cfg"
    wait_until haproxy "$LAST_PID" answers "${PORT[haproxy]}" PONG PING
    log "haproxy up on ${PORT[haproxy]}"
}

start_proxy() {
    local servers="127.0.0.1:${PORT[direct]}" threads=()
    [ "$REPLICA" = 1 ] && servers+=",127.0.0.1:${PORT[replica]}"
    [ -n "${PROXY_THREADS:-}" ] && threads=(--threads "$PROXY_THREADS")
    free_port haproxy-rs
    free_port stats
    # The master takes the reads too, as through HAProxy and direct.
    printf '[routing]\nread_policy = "master"\n' >"$WORK/haproxy-rs.toml"
    start haproxy-rs "$BIN" run -c "$WORK/haproxy-rs.toml" --servers "$servers" \
        --listen "127.0.0.1:${PORT[haproxy-rs]}" --stats "127.0.0.1:${PORT[stats]}" "${threads[@]}"
    # PING is answered by the proxy itself: wait until a write reaches the master (roles found by checks).
    wait_until haproxy-rs "$LAST_PID" answers "${PORT[haproxy-rs]}" OK SET bench-dropin:probe 1
    log "haproxy-rs up on ${PORT[haproxy-rs]} (stats on ${PORT[stats]})"
}

workload() {
    case $1 in
        set | get | pubsub | stream) echo "-w $1" ;;
        tx) echo "-w tx --keys-per-command $TX_KEYS" ;;
        *) die "unknown test $1 (set, get, tx, pubsub, stream)" ;;
    esac
}

label() {
    case $1 in
        set | get) echo "$1 (P=1)" ;;
        tx) echo "tx (MULTI + $TX_KEYS SET + EXEC)" ;;
        pubsub) echo "pubsub (PUBLISH / 8 channels)" ;;
        stream) echo "stream (XADD / XREADGROUP group)" ;;
    esac
}

# compare TEST ROUND: one `bench --compare` over the three targets (order rotated by ROUND); appends
# "test round target ops p50_us p99_us errors kinds" per target to $WORK/results.
compare() {
    local test=$1 round=$2 i list=() json=$WORK/json/$1-$2.json
    for ((i = 0; i < ${#TARGETS[@]}; i++)); do
        local t=${TARGETS[$(((i + round) % ${#TARGETS[@]}))]}
        list+=("$t=127.0.0.1:${PORT[$t]}")
    done
    timeout 5 redis-cli -p "${PORT[direct]}" DEL bench:stream >/dev/null || die "DEL bench:stream failed"
    log "round $round/$ROUNDS $test: ${list[*]}"
    # In the background so that a TERM or INT reaches the trap at once, not after the run.
    # shellcheck disable=SC2046 # the workload's flags are words on purpose
    timeout "$RUN_TIMEOUT" "$BIN" bench --compare "$(IFS=,; echo "${list[*]}")" --rounds 1 -c "$CLIENTS" -P 1 \
        $(workload "$test") -d "$DURATION" --warmup "$WARMUP" --quiet --json "$json" \
        >"$WORK/last-run.txt" 2>&1 &
    BENCH_PID=$!
    wait "$BENCH_PID" ||
        die "bench --compare ($test, round $round) failed or timed out: $(tail -n 3 "$WORK/last-run.txt")"
    BENCH_PID=
    python3 - "$json" "$test" "$round" >>"$WORK/results" <<'EOF'
import json, sys
for r in json.load(open(sys.argv[1])):
    kinds = ",".join(f"{k}:{v}" for k, v in sorted(r["errors_by_kind"].items())) or "-"
    l = r["latency_us"]
    print(sys.argv[2], sys.argv[3], r["setup"]["name"], round(r["throughput"]), l["p50"], l["p99"], r["errors"], kinds)
EOF
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# field TEST TARGET COLUMN: the median of a results column (4 ops, 5 p50, 6 p99) over the rounds.
field() {
    awk -v t="$1" -v g="$2" -v c="$3" '$1 == t && $3 == g { print $c }' "$WORK/results" | median
}

us() {
    if [ -z "$1" ]; then
        echo n/a
    else
        awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%d us", u }'
    fi
}

ratio() {
    if [ -n "$1" ] && [ -n "$2" ]; then
        awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'
    else
        echo n/a
    fi
}

ops() { if [ -n "$1" ]; then printf '%.0f' "$1"; else echo n/a; fi; }

report() {
    local test rs ha di
    printf '\nhaproxy-rs bench --compare -c %s -P 1, %s per target after %s warm-up, median of %s rounds; redis-server %s (%s), %s, haproxy-rs %s; %s cores\n\n' \
        "$CLIENTS" "$DURATION" "$WARMUP" "$ROUNDS" "$(redis-server --version | sed -n 's/.*v=\([^ ]*\).*/\1/p')" \
        "$([ "$REPLICA" = 1 ] && echo "master + replica" || echo "master only")" \
        "$HAPROXY_VERSION" "$("$BIN" --version | awk '{ print $2 }')" "$(nproc)"
    printf '| workload | haproxy-rs ops/s | p50 | p99 | HAProxy ops/s | p50 | p99 | direct ops/s | haproxy-rs/HAProxy | haproxy-rs/direct |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n'
    for test in $TESTS; do
        rs=$(field "$test" haproxy-rs 4)
        ha=$(field "$test" haproxy 4)
        di=$(field "$test" direct 4)
        printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$(label "$test")" "$(ops "$rs")" \
            "$(us "$(field "$test" haproxy-rs 5)")" "$(us "$(field "$test" haproxy-rs 6)")" "$(ops "$ha")" \
            "$(us "$(field "$test" haproxy 5)")" "$(us "$(field "$test" haproxy 6)")" "$(ops "$di")" \
            "$(ratio "$rs" "$ha")" "$(ratio "$rs" "$di")"
    done
    printf '\nops/s: requests answered (a transaction counts once); pubsub counts PUBLISH replies and deliveries\n'
    printf '(each publication reaches every subscriber), its p50/p99 pool both (a delivery: publication to arrival).\n'
    printf 'stream counts XADD, XREADGROUP, XACK and XAUTOCLAIM replies alike; the mix follows how well the consumers\n'
    printf 'keep up (an empty XREADGROUP is cheap), so its ratios are indicative only. Each column is its own median.\n'
    # Delivery latencies of 0 mean the publishers' stamps and the subscribers' clock have different origins.
    local p50
    p50=$(field pubsub haproxy-rs 5)
    if [ -n "$p50" ] && [ "$p50" -le 2 ]; then
        printf 'pubsub latency: the deliveries read ~0 us (publication stamps later than their arrival), so p50 says\n'
        printf 'nothing and p99 is in effect the PUBLISH round trips: a bench issue, the same for every target.\n'
    fi
    printf 'WAIT: not measured; haproxy-rs bench has no workload that sends WAIT.\n'
    awk '$7 > 0 { e[$1 " " $3] += $7; k[$1 " " $3] = k[$1 " " $3] " " $8 }
        END { for (x in e) printf "errors: %s: %d (%s )\n", x, e[x], k[x] }' "$WORK/results" | sort
}

main() {
    local tool round test
    for tool in redis-server redis-cli haproxy python3 cargo; do
        command -v "$tool" >/dev/null || die "$tool is not installed (this script installs nothing)"
    done
    HAPROXY_VERSION=$(haproxy -v 2>&1 | sed -n '1s/^\(HAProxy version [^ ]*\).*/\1/p')
    [[ "$HAPROXY_VERSION" == "HAProxy version 2.6."* ]] ||
        log "warning: the peer is meant to be HAProxy 2.6; found: ${HAPROXY_VERSION:-$(haproxy -v 2>&1 | sed -n 1p)}"
    [ "$CLIENTS" -ge 2 ] || die "CLIENTS must be at least 2 (pubsub and stream have producers and consumers)"
    [[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive number"
    for test in $TESTS; do
        case $test in
            set | get | tx | pubsub | stream) ;;
            *) die "unknown test '$test' in TESTS (set, get, tx, pubsub, stream)" ;;
        esac
    done
    # Longest one `--compare` may take: each target's warm-up and measurement, plus connection set-up and slack.
    RUN_TIMEOUT=$((${#TARGETS[@]} * ($(secs "$DURATION") + $(secs "$WARMUP") + 20)))
    log "cargo build --release"
    timeout 1800 cargo build --release --locked --quiet || die "cargo build --release failed or timed out"
    WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-dropin.XXXXXX")
    mkdir -p "$WORK/json"
    : >"$WORK/results"

    start_redis direct
    if [ "$REPLICA" = 1 ]; then
        start_redis replica --replicaof 127.0.0.1 "${PORT[direct]}"
        wait_until replica "$LAST_PID" replica_linked "${PORT[replica]}"
        log "replica linked to the master"
    fi
    start_haproxy
    start_proxy

    for ((round = 1; round <= ROUNDS; round++)); do
        for test in $TESTS; do
            compare "$test" "$round"
        done
    done
    report
}

main "$@"
