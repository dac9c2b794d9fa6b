#!/usr/bin/env bash
# The main job on a local default topology: build the release binary, bring the lab up (a master, two
# replicas, three sentinels), start haproxy-rs in front of it, drive traffic through it and print where
# the stats page is. `scripts/demo.sh stop` stops the proxy; `scripts/lab.sh down` stops the lab.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
LAB_DIR=${LAB_DIR:-$ROOT/.lab}
PIDFILE=$LAB_DIR/haproxy-rs.pid
LOG=$LAB_DIR/haproxy-rs.log

say() { printf '\n==> %s\n' "$*"; }

stop_proxy() {
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        kill "$(cat "$PIDFILE")" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$(cat "$PIDFILE")" 2>/dev/null || break; sleep 0.1; done
    fi
    rm -f "$PIDFILE"
}

if [ "${1:-}" = stop ]; then
    stop_proxy
    echo "haproxy-rs stopped (the lab is still up: scripts/lab.sh down)"
    exit 0
fi

say "lab: master 6391, replicas 6392 6393, sentinels 26391-26393"
bash scripts/lab.sh up

say "build"
cargo build --release --locked

say "start haproxy-rs (config/haproxy-rs.toml): 6379 read/write, 6380 read-only, 8404 stats"
stop_proxy
mkdir -p "$LAB_DIR"
nohup target/release/haproxy-rs run -c config/haproxy-rs.toml >"$LOG" 2>&1 &
echo $! >"$PIDFILE"
for _ in $(seq 100); do
    [ "$(redis-cli -p 6379 SET demo:ready 1 2>/dev/null)" = OK ] && break
    kill -0 "$(cat "$PIDFILE")" 2>/dev/null || { cat "$LOG"; echo "haproxy-rs exited" >&2; exit 1; }
    sleep 0.1
done
[ "$(redis-cli -p 6379 SET demo:ready 1)" = OK ] || { cat "$LOG"; echo "haproxy-rs did not get ready" >&2; exit 1; }

say "traffic through the proxy"
redis-cli -p 6379 SET demo:hello world
redis-cli -p 6379 GET demo:hello
redis-benchmark -p 6379 -c 50 -n 100000 -t set,get -q
redis-benchmark -p 6380 -c 20 -n 50000 -t get -q

say "where it went (INFO commandstats on each server)"
for port in 6391 6392 6393; do
    role=$(redis-cli -p "$port" ROLE | head -1)
    gets=$(redis-cli -p "$port" INFO commandstats | grep -o 'cmdstat_get:calls=[0-9]*' || echo 'cmdstat_get:calls=0')
    sets=$(redis-cli -p "$port" INFO commandstats | grep -o 'cmdstat_set:calls=[0-9]*' || echo 'cmdstat_set:calls=0')
    echo "  $port $role  $sets  $gets"
done

say "haproxy-rs is running (pid $(cat "$PIDFILE"), log $LOG)"
echo "  stats page:  http://127.0.0.1:8404/   JSON: /stats.json   Prometheus: /metrics   health: /healthz"
echo "  try a failover:  redis-cli -p 26391 SENTINEL FAILOVER mymaster"
echo "  stop:  scripts/demo.sh stop && scripts/lab.sh down"
