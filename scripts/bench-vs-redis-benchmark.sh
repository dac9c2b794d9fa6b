#!/usr/bin/env bash
# `haproxy-rs bench` against `redis-benchmark` on the same redis-server, SET and GET, c=50, P=1 and P=16,
# alternating in each round, as a Markdown table with the ratio bench / redis-benchmark.
#
#   scripts/bench-vs-redis-benchmark.sh
#
# Environment: PORT (6599, a redis-server started here), ROUNDS (3), SECONDS_PER_RUN (8, haproxy-rs
# bench), N_P1 (400000) and N_P16 (3000000) requests per redis-benchmark run, CLIENTS (50), THREADS
# (redis-benchmark --threads; 1, its default). haproxy-rs bench uses every core (its default).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

PORT=${PORT:-6599}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-8}
N_P1=${N_P1:-400000}
N_P16=${N_P16:-3000000}
CLIENTS=${CLIENTS:-50}
THREADS=${THREADS:-1}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs
WORK=$(mktemp -d)
SERVER_PID=

log() { printf 'bench-vs: %s\n' "$*" >&2; }

cleanup() {
    [ -n "$SERVER_PID" ] && kill "$SERVER_PID" 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

timeout 1800 cargo build --release --locked --quiet
redis-server --port "$PORT" --bind 127.0.0.1 --save '' --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 100); do
    [ "$(redis-cli -p "$PORT" PING 2>/dev/null || true)" = PONG ] && break
    sleep 0.1
done

# rb TEST P: requests per second from redis-benchmark.
rb() {
    local n=$N_P1
    [ "$2" -gt 1 ] && n=$N_P16
    timeout 300 redis-benchmark -p "$PORT" -c "$CLIENTS" -P "$2" -t "$1" -n "$n" -r 100000 -d 3 \
        --threads "$THREADS" --csv 2>/dev/null | awk -F'"' 'NR == 2 { print int($4) }'
}

# hb TEST P: requests per second from haproxy-rs bench.
hb() {
    timeout 120 "$BIN" bench --target "127.0.0.1:$PORT" -c "$CLIENTS" -P "$2" -w "$1" \
        -d "${SECONDS_PER_RUN}s" --warmup 1s --keyspace 100000 --data-size 3 --quiet --json "$WORK/hb.json" \
        >/dev/null
    awk -F': ' '/"throughput"/ { gsub(/,/, "", $2); print int($2) }' "$WORK/hb.json"
}

declare -A RB HB
for round in $(seq "$ROUNDS"); do
    for p in 1 16; do
        for t in set get; do
            log "round $round: $t P=$p"
            RB[$t-$p]+="$(rb "$t" "$p") "
            HB[$t-$p]+="$(hb "$t" "$p") "
        done
    done
done

median() { tr ' ' '\n' | grep . | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
echo "| test | redis-benchmark (median of $ROUNDS) | haproxy-rs bench | ratio | all runs (rb / bench) |"
echo "|---|---|---|---|---|"
for p in 1 16; do
    for t in set get; do
        r=$(echo "${RB[$t-$p]}" | median)
        h=$(echo "${HB[$t-$p]}" | median)
        ratio=$(awk -v a="$h" -v b="$r" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
        echo "| ${t^^} P=$p | $r | $h | $ratio | ${RB[$t-$p]}/ ${HB[$t-$p]}|"
    done
done
