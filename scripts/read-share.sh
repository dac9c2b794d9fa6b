#!/usr/bin/env bash
# How many reads reach the replicas under each read_consistency, at a 1:10 write:read load
# (issue 14): the lab (scripts/lab.sh), one proxy per round on 6379 with the setting changed,
# `haproxy-rs bench -w mixed --ratio 1:10` through it, and the servers' own GET counts.
# Rounds rotate the settings; prints each setting's median share of GETs served by replicas, with
# the range. Not a test (numbers depend on the machine's load).
#
#   scripts/read-share.sh [rounds=3] [duration=5s] [rps=unlimited]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
ROUNDS=${1:-3}
DURATION=${2:-5s}
RPS=${3:+--rps $3}
BIN=${BIN:-target/release/haproxy-rs}
MODES=(acknowledged-writes read-your-writes eventual)
SERVERS=(6391 6392 6393)
OUT=$(mktemp -d)
trap 'kill "${PROXY:-0}" 2>/dev/null || true; rm -rf "$OUT"' EXIT

[ -x "$BIN" ] || cargo build --release --locked
bash scripts/lab.sh up >/dev/null

gets() { redis-cli -p "$1" INFO commandstats | tr -d '\r' | sed -n 's/^cmdstat_get:calls=\([0-9]*\),.*/\1/p' | grep . || echo 0; }

for round in $(seq 1 "$ROUNDS"); do
    for i in "${!MODES[@]}"; do
        mode=${MODES[$(( (i + round) % ${#MODES[@]} ))]}
        sed "s/^read_consistency = .*/read_consistency = \"$mode\"/" config/haproxy-rs.toml >"$OUT/proxy.toml"
        "$BIN" run -c "$OUT/proxy.toml" >"$OUT/proxy.log" 2>&1 &
        PROXY=$!
        for _ in $(seq 1 100); do redis-cli -p 6379 PING >/dev/null 2>&1 && break; sleep 0.1; done
        # Until the proxy sees the replicas as fit for reads.
        for _ in $(seq 1 100); do
            curl -sf http://127.0.0.1:8404/stats.json | grep -q '"role":"replica"' && break; sleep 0.1
        done
        for p in "${SERVERS[@]}"; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
        "$BIN" bench --target 127.0.0.1:6379 -w mixed --ratio 1:10 -c 20 -d "$DURATION" --warmup 0s $RPS >"$OUT/bench.txt"
        master=$(gets 6391)
        replicas=$(( $(gets 6392) + $(gets 6393) ))
        total=$(( master + replicas ))
        share=$(awk -v r="$replicas" -v t="$total" 'BEGIN { printf "%.1f", t ? 100 * r / t : 0 }')
        echo "$mode $share $total" >>"$OUT/results"
        echo "round $round $mode: $share% of $total GETs on replicas" >&2
        kill "$PROXY"; wait "$PROXY" 2>/dev/null || true
        for p in "${SERVERS[@]}"; do redis-cli -p "$p" CONFIG RESETSTAT >/dev/null; done
    done
done

echo "read_consistency      replica share (${3:-unlimited} req/s) of GETs: median (min-max) over $ROUNDS rounds"
for mode in "${MODES[@]}"; do
    grep "^$mode " "$OUT/results" | awk '{print $2}' | sort -n | awk -v m="$mode" '
        { v[NR] = $1 } END { printf "%-21s %s%% (%s-%s%%)\n", m, v[int((NR + 1) / 2)], v[1], v[NR] }'
done
