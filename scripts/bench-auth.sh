#!/usr/bin/env bash
# What client authentication costs: a redis-server with `requirepass` and an ACL user, directly, through
# haproxy-rs in its default backend mode (--password alone) and through HAProxy 2.6 in TCP mode (where
# every AUTH reaches the server), as a Markdown table of medians with ranges and ratios to direct.
#
#   scripts/bench-auth.sh
#
# Workloads (redis-benchmark, c=CLIENTS):
#   get-default   GET as the default user (requirepass), connections kept: the per-command check
#   get-acl       GET as ACL user `app` (~bench:* +@read +@write -@dangerous): a restricted user's check
#   login         PING with -k 0: every request on a new connection that logs in first (AUTH each time)
# Environment: ROUNDS (3) rounds with the targets in rotating order; N (200000) requests per GET run,
# N_LOGIN (20000) per login run; CLIENTS (50); PORT_BASE (17300): redis-server on it, haproxy-rs on +1,
# HAProxy on +2; BENCH_TIMEOUT (300) s per redis-benchmark run. Everything started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
N=${N:-200000}
N_LOGIN=${N_LOGIN:-20000}
CLIENTS=${CLIENTS:-50}
PORT_BASE=${PORT_BASE:-17300}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
WORK=$ROOT/.lab/bench-auth
PASSWORD=bench-pw
TARGETS=(direct haproxy-rs haproxy)
declare -A PORT=([direct]=$PORT_BASE [haproxy-rs]=$((PORT_BASE + 1)) [haproxy]=$((PORT_BASE + 2)))
PIDS=()

log() { printf 'bench-auth: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# wait_auth NAME PORT PID: polls AUTH + PING for 30 s; fails early if the process died.
wait_auth() {
    local name=$1 port=$2 pid=$3 i
    for ((i = 0; i < 300; i++)); do
        [ "$(timeout 2 redis-cli -p "$port" -a "$PASSWORD" --no-auth-warning PING 2>/dev/null || true)" = PONG ] &&
            return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log"
        sleep 0.1
    done
    die "$name does not answer PING on $port after 30s; see $WORK/$name.log"
}

start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_auth "$name" "${PORT[$name]}" "$!"
    log "$name up on ${PORT[$name]}"
}

# bench TARGET WORKLOAD: appends "workload target rps" to $WORK/results.
bench() {
    local target=$1 workload=$2 args
    case $workload in
        get-default) args=(-a "$PASSWORD" -n "$N" -t get) ;;
        get-acl) args=(--user app -a app-pw -n "$N" -t get) ;;
        login) args=(-a "$PASSWORD" -n "$N_LOGIN" -k 0 -t ping_mbulk) ;;
    esac
    timeout "$BENCH_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "${PORT[$target]}" -c "$CLIENTS" \
        "${args[@]}" -r 1000 -q --csv 2>>"$WORK/redis-benchmark.err" |
        awk -F'"' -v w="$workload" -v t="$target" 'NR > 1 && $4 != "" { print w, t, $4 }' \
            >>"$WORK/results" || die "redis-benchmark $workload against $target failed or timed out"
}

stat() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) { print "n/a"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f %.0f %.0f", m, v[1], v[NR] }'; }

main() {
    command -v redis-benchmark >/dev/null || bash "$ROOT/scripts/lab.sh" install
    command -v haproxy >/dev/null || die "haproxy is missing (apt-get install haproxy)"
    mkdir -p "$WORK"
    : >"$WORK/results"
    : >"$WORK/redis-benchmark.err"
    start direct redis-server --port "${PORT[direct]}" --bind 127.0.0.1 --save '' --appendonly no \
        --dir "$WORK" --requirepass "$PASSWORD" \
        --user app on '>app-pw' '~key:*' '~bench:*' +@read +@write -@dangerous
    log "cargo build --release"
    timeout 1800 cargo build --release --locked --quiet
    start haproxy-rs "${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs" run \
        --servers "127.0.0.1:${PORT[direct]}" --password "$PASSWORD" \
        --listen "127.0.0.1:${PORT[haproxy-rs]}" --stats off
    cat >"$WORK/haproxy.cfg" <<EOF
defaults
    mode tcp
    timeout connect 2s
    timeout client 30s
    timeout server 30s
frontend redis
    bind 127.0.0.1:${PORT[haproxy]}
    default_backend master
backend master
    server redis 127.0.0.1:${PORT[direct]}
EOF
    start haproxy haproxy -db -f "$WORK/haproxy.cfg"

    local round w i t
    for ((round = 0; round < ROUNDS; round++)); do
        for w in get-default get-acl login; do
            for ((i = 0; i < ${#TARGETS[@]}; i++)); do
                t=${TARGETS[$(((i + round) % ${#TARGETS[@]}))]}
                log "round $((round + 1))/$ROUNDS $w $t"
                bench "$t" "$w"
            done
        done
    done
    report
}

report() {
    local w t row direct s
    printf '\nredis-benchmark -c %s, median (min-max) of %s rounds, requests/s\n\n' "$CLIENTS" "$ROUNDS"
    printf '| workload | direct | haproxy-rs | haproxy | haproxy-rs / direct | haproxy / direct | haproxy-rs / haproxy |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|\n'
    for w in get-default get-acl login; do
        declare -A med=()
        row="| $w |"
        for t in "${TARGETS[@]}"; do
            s=$(awk -v w="$w" -v t="$t" '$1 == w && $2 == t { print $3 }' "$WORK/results" | stat)
            read -r m lo hi <<<"$s"
            med[$t]=$m
            row+=" $m ($lo-$hi) |"
        done
        direct=${med[direct]}
        for pair in "haproxy-rs direct" "haproxy direct" "haproxy-rs haproxy"; do
            read -r a b <<<"$pair"
            row+=" $(awk -v a="${med[$a]}" -v b="${med[$b]}" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }') |"
        done
        printf '%s\n' "$row"
        unset med
    done
}

main "$@"
