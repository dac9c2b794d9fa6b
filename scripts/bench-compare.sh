#!/usr/bin/env bash
# Throughput of the lab master direct vs through haproxy-rs, HAProxy and twemproxy, as a Markdown table.
#
#   scripts/bench-compare.sh               lab up (scripts/lab.sh), build release, bench, stop the proxies
#
# Environment: ROUNDS (3) rounds with the targets in rotating order, median reported;
# N_P1 (200000) and N_P16 (1000000) requests per redis-benchmark run; CLIENTS (50);
# TARGETS ("direct haproxy-rs haproxy twemproxy"); LAB_DOWN=1 stops the lab afterwards;
# BENCH_TIMEOUT (300) seconds per redis-benchmark run; BEFORE_BIN=path adds the target
# "haproxy-rs-before": that binary (an earlier build) with the same config on ports 16383/16384/18405,
# so a change is measured against the build before it in the same run. Everything started here is
# stopped on exit. Cells are medians, with the range over the rounds in brackets.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

ROUNDS=${ROUNDS:-3}
N_P1=${N_P1:-200000}
N_P16=${N_P16:-1000000}
CLIENTS=${CLIENTS:-50}
BEFORE_BIN=${BEFORE_BIN:-}
TARGETS=${TARGETS:-direct haproxy-rs ${BEFORE_BIN:+haproxy-rs-before }haproxy twemproxy}
BENCH_TIMEOUT=${BENCH_TIMEOUT:-300}
LAB_DOWN=${LAB_DOWN:-0}
WORK=$ROOT/.lab/bench
LAB_MASTER_PORT=6391

declare -A PORT=([direct]=$LAB_MASTER_PORT [haproxy-rs]=6379 [haproxy-rs-before]=16383 [haproxy]=16379 [twemproxy]=16381)

SCRIPT_NAME=bench
# shellcheck source=lib/children.sh
. "$ROOT/scripts/lib/children.sh"

# After the children are stopped (scripts/lib/children.sh).
on_exit() {
    if [ "$LAB_DOWN" = 1 ]; then
        bash "$ROOT/scripts/lab.sh" down || true
    fi
}

wanted() { [[ " $TARGETS " == *" $1 "* ]]; }

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

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

# start NAME CMD...: runs CMD in the background, logging to $WORK/NAME.log, and waits for PING.
start() {
    local name=$1
    shift
    port_busy "${PORT[$name]}" && die "port ${PORT[$name]} for $name is already in use"
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=("$!")
    wait_pong "$name" "${PORT[$name]}" "$!"
    log "$name up on ${PORT[$name]}"
}

# HAProxy starts with every server UP and needs `fall 2` failed checks to drop the replicas from the write
# backend: wait until 6 consecutive connections (two round-robin cycles) reach a master.
wait_haproxy_master() {
    local streak=0 i
    for ((i = 0; i < 300 && streak < 6; i++)); do
        if timeout 2 redis-cli -p "${PORT[haproxy]}" INFO replication 2>/dev/null | grep -q '^role:master'; then
            streak=$((streak + 1))
        else
            streak=0
            sleep 0.1
        fi
    done
    [ "$streak" -ge 6 ] || die "haproxy still routes writes to replicas after 30s"
    log "haproxy routes writes to the master only"
}

# bench TARGET P N: appends "P target TEST rps" lines to $WORK/results.
bench() {
    local target=$1 p=$2 n=$3
    timeout "$BENCH_TIMEOUT" redis-benchmark -h 127.0.0.1 -p "${PORT[$target]}" -c "$CLIENTS" -n "$n" \
        -P "$p" -t set,get -q --csv 2>>"$WORK/redis-benchmark.err" |
        awk -F'"' -v p="$p" -v t="$target" '$2 == "SET" || $2 == "GET" { print p, t, $2, $4 }' \
            >>"$WORK/results" || die "redis-benchmark against $target failed or timed out"
}

median() { sort -g | awk '{ v[NR] = $1 } END { if (NR == 0) print ""; else if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
# range: "min-max" of the numbers on stdin, as thousands (k) of requests per second.
range() { sort -g | awk 'NR == 1 { lo = $1 } { hi = $1 } END { if (NR) printf "%.0fk-%.0fk", lo / 1000, hi / 1000 }'; }

main() {
    command -v redis-benchmark >/dev/null || bash "$ROOT/scripts/lab.sh" install
    bash "$ROOT/scripts/lab.sh" up
    local master
    master=$(timeout 5 redis-cli -p 26391 SENTINEL get-master-addr-by-name mymaster | tail -n1)
    [ "$master" = "$LAB_MASTER_PORT" ] ||
        die "lab master is port $master, not $LAB_MASTER_PORT (twemproxy and 'direct' expect it): scripts/lab.sh down && scripts/lab.sh up"
    mkdir -p "$WORK"
    : >"$WORK/results"

    if wanted haproxy-rs; then
        [ -f config/haproxy-rs.toml ] || die "config/haproxy-rs.toml is missing (or leave haproxy-rs out of TARGETS)"
        log "cargo build --release"
        timeout 1800 cargo build --release --locked --quiet
        start haproxy-rs "${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs" run -c config/haproxy-rs.toml
    fi
    if wanted haproxy-rs-before; then
        [ -x "$BEFORE_BIN" ] || die "BEFORE_BIN=$BEFORE_BIN is not an executable"
        start haproxy-rs-before "$BEFORE_BIN" run -c config/haproxy-rs.toml \
            --listen "127.0.0.1:${PORT[haproxy-rs-before]}" --read-listen 127.0.0.1:16384 --stats 127.0.0.1:18405
    fi
    if wanted haproxy; then
        start haproxy haproxy -db -f config/haproxy.cfg
        wait_haproxy_master
    fi
    if wanted twemproxy; then
        start twemproxy nutcracker -c config/nutcracker.yml -a 127.0.0.1 -s 16382
    fi

    local targets round p n i
    read -r -a targets <<<"$TARGETS"
    for ((round = 0; round < ROUNDS; round++)); do
        for p in 1 16; do
            n=$N_P1
            [ "$p" = 16 ] && n=$N_P16
            # Rotate the order each round so no target always runs first (cold) or last.
            for ((i = 0; i < ${#targets[@]}; i++)); do
                local t=${targets[$(((i + round) % ${#targets[@]}))]}
                log "round $((round + 1))/$ROUNDS P=$p $t"
                bench "$t" "$p" "$n"
            done
        done
    done
    report
}

report() {
    local targets t test p header sep row rps direct
    read -r -a targets <<<"$TARGETS"
    header="| test |"
    sep="|---|"
    for t in "${targets[@]}"; do
        header+=" $t rps |"
        sep+="---:|"
        if [ "$t" != direct ]; then
            header+=" $t / direct |"
            sep+="---:|"
        fi
    done
    printf '\nredis-benchmark -c %s -t set,get, median of %s rounds (N=%s at P=1, %s at P=16)\n\n' \
        "$CLIENTS" "$ROUNDS" "$N_P1" "$N_P16"
    printf '%s\n%s\n' "$header" "$sep"
    for p in 1 16; do
        for test in SET GET; do
            direct=$(awk -v p="$p" -v s="$test" '$1 == p && $2 == "direct" && $3 == s { print $4 }' "$WORK/results" | median)
            row="| $test P=$p |"
            for t in "${targets[@]}"; do
                local runs
                runs=$(awk -v p="$p" -v t="$t" -v s="$test" '$1 == p && $2 == t && $3 == s { print $4 }' "$WORK/results")
                rps=$(median <<<"$runs")
                row+=" $(printf '%.0f' "${rps:-0}") [$(range <<<"$runs")] |"
                if [ "$t" != direct ]; then
                    if [ -n "$direct" ] && [ -n "$rps" ]; then
                        row+=" $(awk -v a="$rps" -v b="$direct" 'BEGIN { printf "%.2f", a / b }') |"
                    else
                        row+=" n/a |"
                    fi
                fi
            done
            printf '%s\n' "$row"
        done
    done
}

main "$@"
