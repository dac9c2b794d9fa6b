#!/usr/bin/env bash
# haproxy-rs in cluster mode against a cluster-aware client talking to the cluster directly, from one run:
# a local 6-node Redis Cluster (3 masters, 3 replicas) with `haproxy-rs run --cluster` in front, then
# `haproxy-rs bench` through the proxy and `haproxy-rs bench --cluster` direct (each connection talks to
# every master itself, MGET/MSET split by slot) for set, get and mixed_10keys (MSET/MGET of 10 keys at
# 1:10), c=50, P=1 and P=16, as a Markdown table with ops/s, p50, p99 and the ratio haproxy-rs / direct.
# `redis-benchmark --cluster -t set,get` is a second direct reference.
#
#   scripts/bench-cluster.sh
#
# Environment: ROUNDS (3) rounds, the targets alternating, the median reported; SECONDS_PER_RUN (5) measured
# per case after WARMUP (1s); CLIENTS (50); PIPELINES ("1 16"); TESTS ("set get mixed_10keys");
# REDIS_BENCHMARK (1; 0 skips it) with N_P1 (200000) and N_P16 (1000000) requests per run; PROXY_THREADS
# (unset: the proxy's default, half the cores); READ_POLICY (master): the proxy's routing.read_policy; the
# direct client reads from masters, as cluster clients do by default, so `master` compares like with like
# (prefer-replica, the proxy's default, spreads GETs over the replicas too); BASE_PORT (7400), where the
# search for free loopback ports starts; KEEP=1 keeps the work dir (logs, JSON reports). Every process
# started here is stopped on exit.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-5}
WARMUP=${WARMUP:-1s}
CLIENTS=${CLIENTS:-50}
PIPELINES=${PIPELINES:-1 16}
TESTS=${TESTS:-set get mixed_10keys}
REDIS_BENCHMARK=${REDIS_BENCHMARK:-1}
N_P1=${N_P1:-200000}
N_P16=${N_P16:-1000000}
READ_POLICY=${READ_POLICY:-master}
BASE_PORT=${BASE_PORT:-7400}
KEEP=${KEEP:-0}
BIN=${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs
WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-cluster.XXXXXX")
# Longest any one load run may take (warm-up, measurement, connection set-up and slack).
RUN_TIMEOUT=$((SECONDS_PER_RUN + 60))
NODES=()
PROXY_PORT=
STATS_PORT=
NEXT_PORT=$BASE_PORT

SCRIPT_NAME=bench-cluster
# shellcheck source=lib/children.sh
. "$ROOT/scripts/lib/children.sh"

# After the children are stopped (scripts/lib/children.sh).
on_exit() {
    if [ "$KEEP" = 1 ]; then
        log "logs and reports kept in $WORK"
    else
        rm -rf "$WORK"
    fi
}

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

# free_port: the next port from NEXT_PORT on that nothing listens on (sets PORT).
free_port() {
    while port_busy "$NEXT_PORT"; do
        NEXT_PORT=$((NEXT_PORT + 1))
    done
    [ "$NEXT_PORT" -lt 65000 ] || die "no free port above $BASE_PORT"
    PORT=$NEXT_PORT
    NEXT_PORT=$((NEXT_PORT + 1))
}

# wait_pong NAME PORT PID: polls PING for 30 s; fails early if the process died.
wait_pong() {
    local name=$1 port=$2 pid=$3 i
    for ((i = 0; i < 300; i++)); do
        [ "$(timeout 2 redis-cli -p "$port" PING 2>/dev/null || true)" = PONG ] && return 0
        kill -0 "$pid" 2>/dev/null || die "$name exited; see $WORK/$name.log"
        sleep 0.1
    done
    die "$name does not answer PING on $port after 30s; see $WORK/$name.log"
}

# start_node: one cluster-enabled redis-server on a free port, its bus on another (appends to NODES).
start_node() {
    local port bus dir
    free_port
    port=$PORT
    free_port
    bus=$PORT
    dir=$WORK/node-$port
    mkdir -p "$dir"
    redis-server --port "$port" --bind 127.0.0.1 --cluster-enabled yes --cluster-port "$bus" \
        --cluster-config-file nodes.conf --cluster-node-timeout 5000 --save '' --appendonly no \
        --dir "$dir" >"$WORK/node-$port.log" 2>&1 &
    PIDS+=("$!")
    wait_pong "node-$port" "$port" "$!"
    NODES+=("127.0.0.1:$port")
}

# cluster_ready: every node says cluster_state:ok and 3 replicas have their link up.
cluster_ready() {
    local node linked=0
    for node in "${NODES[@]}"; do
        timeout 2 redis-cli -p "${node#*:}" CLUSTER INFO 2>/dev/null | grep -q '^cluster_state:ok' || return 1
        if timeout 2 redis-cli -p "${node#*:}" INFO replication 2>/dev/null | grep -q '^master_link_status:up'; then
            linked=$((linked + 1))
        fi
    done
    [ "$linked" -eq 3 ]
}

start_cluster() {
    local i
    for ((i = 0; i < 6; i++)); do
        start_node
    done
    timeout 60 redis-cli --cluster create "${NODES[@]}" --cluster-replicas 1 --cluster-yes \
        >"$WORK/cluster-create.log" 2>&1 || die "redis-cli --cluster create failed; see $WORK/cluster-create.log"
    for ((i = 0; i < 600; i++)); do
        cluster_ready && { log "cluster up: ${NODES[*]}"; return 0; }
        sleep 0.1
    done
    die "the cluster is not ready after 60s"
}

start_proxy() {
    free_port
    PROXY_PORT=$PORT
    free_port
    STATS_PORT=$PORT
    local threads=()
    [ -n "${PROXY_THREADS:-}" ] && threads=(--threads "$PROXY_THREADS")
    printf '[routing]\nread_policy = "%s"\n' "$READ_POLICY" >"$WORK/haproxy-rs.toml"
    "$BIN" run -c "$WORK/haproxy-rs.toml" --cluster "$(IFS=,; echo "${NODES[*]}")" --listen "127.0.0.1:$PROXY_PORT" \
        --stats "127.0.0.1:$STATS_PORT" "${threads[@]}" >"$WORK/haproxy-rs.log" 2>&1 &
    PIDS+=("$!")
    wait_pong haproxy-rs "$PROXY_PORT" "$!"
    local i
    # PING is answered by the proxy itself: wait until a write reaches a master.
    for ((i = 0; i < 300; i++)); do
        [ "$(timeout 2 redis-cli -p "$PROXY_PORT" SET bench-cluster:probe 1 2>/dev/null || true)" = OK ] && {
            log "haproxy-rs up on $PROXY_PORT (stats on $STATS_PORT)"
            return 0
        }
        sleep 0.1
    done
    die "haproxy-rs does not write to the cluster after 30s; see $WORK/haproxy-rs.log"
}

workload() {
    case $1 in
        set) echo "-w set" ;;
        get) echo "-w get" ;;
        mixed_10keys) echo "-w mixed --ratio 1:10 --keys-per-command 10" ;;
        *) die "unknown test $1 (set, get, mixed_10keys)" ;;
    esac
}

# hb TARGET TEST P ROUND: one haproxy-rs bench run; appends "test p target ops p50_us p99_us errors".
hb() {
    local target=$1 test=$2 p=$3 round=$4 json
    local -a where
    case $target in
        haproxy-rs) where=(--target "127.0.0.1:$PROXY_PORT") ;;
        direct) where=(--cluster "${NODES[0]}") ;;
    esac
    json=$WORK/json/$target-$test-P$p-$round.json
    # shellcheck disable=SC2046 # the workload's flags are words on purpose
    timeout "$RUN_TIMEOUT" "$BIN" bench "${where[@]}" -c "$CLIENTS" -P "$p" $(workload "$test") \
        -d "${SECONDS_PER_RUN}s" --warmup "$WARMUP" --quiet --json "$json" >"$WORK/last-run.txt" 2>&1 ||
        die "bench against $target ($test P=$p) failed or timed out: $(tail -n 3 "$WORK/last-run.txt")"
    python3 - "$json" "$test" "$p" "$target" >>"$WORK/results" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
kinds = ",".join(f"{k}:{v}" for k, v in sorted(r["errors_by_kind"].items())) or "-"
print(*sys.argv[2:5], round(r["throughput"]), r["latency_us"]["p50"], r["latency_us"]["p99"], r["errors"], kinds)
EOF
}

# rb P ROUND: redis-benchmark --cluster -t set,get; appends the same kind of line per test.
rb() {
    local p=$1 n=$N_P1
    [ "$p" -gt 1 ] && n=$N_P16
    timeout 300 redis-benchmark -h 127.0.0.1 -p "${NODES[0]#*:}" --cluster -c "$CLIENTS" -P "$p" -t set,get \
        -n "$n" -r 100000 -d 3 --csv 2>>"$WORK/redis-benchmark.err" >"$WORK/rb.csv" ||
        die "redis-benchmark --cluster failed or timed out; see $WORK/redis-benchmark.err"
    awk -F'"' -v p="$p" '$2 == "SET" || $2 == "GET" {
        printf "%s %s redis-benchmark %d %d %d 0 -\n", tolower($2), p, $4, $10 * 1000, $14 * 1000
    }' "$WORK/rb.csv" >>"$WORK/results"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

# field TEST P TARGET COLUMN: the median of a results column (4 ops, 5 p50, 6 p99) over the rounds.
field() {
    awk -v t="$1" -v p="$2" -v g="$3" -v c="$4" '$1 == t && $2 == p && $3 == g { print $c }' "$WORK/results" | median
}

us() {
    if [ -z "$1" ]; then
        echo n/a
    else
        awk -v u="$1" 'BEGIN { if (u >= 1000) printf "%.2f ms", u / 1000; else printf "%d us", u }'
    fi
}

report() {
    local p test hops dops ratio rops errs
    printf '\nhaproxy-rs bench -c %s, %ss per case after %s warm-up, median of %s rounds; cluster of 3 masters + 3 replicas on loopback; proxy read_policy %s; %s cores\n\n' \
        "$CLIENTS" "$SECONDS_PER_RUN" "$WARMUP" "$ROUNDS" "$READ_POLICY" "$(nproc)"
    printf '| test | P | haproxy-rs ops/s | p50 | p99 | direct (bench --cluster) ops/s | p50 | p99 | haproxy-rs / direct | redis-benchmark --cluster ops/s | errors (proxy / direct) |\n'
    printf '|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|\n'
    for p in $PIPELINES; do
        for test in $TESTS; do
            hops=$(field "$test" "$p" haproxy-rs 4)
            dops=$(field "$test" "$p" direct 4)
            ratio=n/a
            [ -n "$hops" ] && [ -n "$dops" ] && ratio=$(awk -v a="$hops" -v b="$dops" 'BEGIN { printf "%.2f", (b > 0 ? a / b : 0) }')
            rops=$(field "$test" "$p" redis-benchmark 4)
            errs=$(awk -v t="$test" -v p="$p" '$1 == t && $2 == p && $3 != "redis-benchmark" { e[$3] += $7; if ($8 != "-") k[$3] = k[$3] " " $8 }
                END { printf "%d%s / %d%s", e["haproxy-rs"], k["haproxy-rs"], e["direct"], k["direct"] }' "$WORK/results")
            printf '| %s | %s | %.0f | %s | %s | %.0f | %s | %s | %s | %s | %s |\n' "$test" "$p" "${hops:-0}" \
                "$(us "$(field "$test" "$p" haproxy-rs 5)")" "$(us "$(field "$test" "$p" haproxy-rs 6)")" \
                "${dops:-0}" "$(us "$(field "$test" "$p" direct 5)")" "$(us "$(field "$test" "$p" direct 6)")" \
                "$ratio" "${rops:--}" "$errs"
        done
    done
    # The proxy's own view: redirections and retries should stay at zero on a stable cluster.
    timeout 5 python3 - "127.0.0.1:$STATS_PORT" <<'EOF' || true
import json, sys, urllib.request
s = json.load(urllib.request.urlopen(f"http://{sys.argv[1]}/stats.json", timeout=3))
c = s.get("cluster") or {}
keys = ("refreshes", "refresh_failures", "moved", "ask", "retries", "retries_exhausted")
print("\nhaproxy-rs cluster counters: " + ", ".join(f"{k} {c.get(k)}" for k in keys))
EOF
}

main() {
    if ! command -v redis-server >/dev/null || ! command -v redis-cli >/dev/null; then
        bash "$ROOT/scripts/lab.sh" install
    fi
    command -v python3 >/dev/null || die "python3 is needed to read the JSON reports"
    log "cargo build --release"
    timeout 1800 cargo build --release --locked --quiet
    mkdir -p "$WORK/json"
    : >"$WORK/results"
    start_cluster
    start_proxy

    local round p test i targets=(haproxy-rs direct)
    for ((round = 1; round <= ROUNDS; round++)); do
        for p in $PIPELINES; do
            for test in $TESTS; do
                # Alternate the order each round so neither target always runs first.
                for ((i = 0; i < 2; i++)); do
                    local t=${targets[$(((i + round) % 2))]}
                    log "round $round/$ROUNDS P=$p $test $t"
                    hb "$t" "$test" "$p" "$round"
                done
            done
            if [ "$REDIS_BENCHMARK" = 1 ]; then
                log "round $round/$ROUNDS P=$p redis-benchmark --cluster"
                rb "$p"
            fi
        done
    done
    report
}

main "$@"
