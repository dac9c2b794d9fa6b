#!/usr/bin/env bash
# Named faults under `haproxy-rs bench --track` load, through haproxy-rs and through HAProxy with the usual
# role check (config/haproxy.cfg's checks, addresses adapted) in the same run: one result line per scenario
# and target, and a Markdown table at the end (errors, the error window, acknowledged writes lost, stale
# reads, the longest successful request, the seconds below a tenth of the usual throughput).
#
#   scripts/chaos.sh                      every scenario (about 12 minutes)
#   scripts/chaos.sh partition-b sigstop-master
#
# Scenarios:
#   partition-a         Jepsen's: the master's host, one sentinel and the client side cut off from the other
#                       servers and sentinels for 15 s (the majority fails over; the old master's writes of
#                       the partition are discarded when it rejoins)
#   partition-b         the client side (both proxies) cut off from the three sentinels for 10 s
#   partition-c         one sentinel cut off from everything for 10 s
#   partition-d         a replica cut off from everything for 10 s, then back
#   partition-e         partition-a's cut flapping: on for 1 s, off for 1 s, for 30 s
#   sigstop-master      SIGSTOP of the master for 10 s (the sentinels fail over; it wakes up as a master)
#   stale-sentinel      a failover, then a sentinel restarted with its sentinel.conf from before it
#   proxy-restart       haproxy-rs upgraded in place (`run --takeover`), HAProxy reloaded (`-x ... -sf`)
#   failover-every-30s  SENTINEL FAILOVER at 10 s, 40 s and 70 s
#
# Everything runs in network namespaces the script creates and removes: a hub namespace routing between
# hosts (10.77.0.0/24, a /30 each), the client side (both proxies and both load generators, which run at the
# same time, one per target), three redis-servers and three sentinels (down-after-milliseconds 3000) on hosts
# of their own. A cut is an `ip rule ... blackhole` in the hub: packets are dropped silently both ways, as
# across a failed link (this kernel has no iptables nor netem). Every scenario starts from a healed net with
# all processes running, the three sentinels agreeing on a master that has both replicas online, and both
# proxies routing writes to it. The namespaces and every process are removed on exit, and the whole run is
# bounded (MAX_SECONDS).
#
# Adding a scenario: a function fault_<name>, run FAULT_AT seconds into the load, that injects the fault and
# returns within the scenario's load (DURATION_OF[<name>] seconds, which must leave the topology time to
# settle before the writes are read back), and <name> in ALL_SCENARIOS.
#
# Environment: TARGETS ("haproxy-rs haproxy"), CLIENTS (4 per target), RATIO (1:1 writes to reads), OUT
# (.lab/chaos: the bench reports <scenario>-<target>.{txt,json,html}, logs/, chaos.md), BIN (the release
# build), NET (10.77.0: the /24's first three octets), NS_PREFIX (chaos), MAX_SECONDS (1800). Needs root,
# iproute2, redis-server, redis-sentinel, redis-cli, haproxy and python3.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

TARGETS=${TARGETS:-haproxy-rs haproxy}
CLIENTS=${CLIENTS:-4}
RATIO=${RATIO:-1:1}
OUT=${OUT:-$ROOT/.lab/chaos}
BIN=${BIN:-${CARGO_TARGET_DIR:-$ROOT/target}/release/haproxy-rs}
NET=${NET:-10.77.0}
NS_PREFIX=${NS_PREFIX:-chaos}
MAX_SECONDS=${MAX_SECONDS:-1800}
FAULT_AT=5
ALL_SCENARIOS="partition-a partition-b partition-c partition-d partition-e sigstop-master stale-sentinel
    proxy-restart reload failover-every-30s"
declare -A DURATION_OF=(
    [partition-a]=45 [partition-b]=25 [partition-c]=25 [partition-d]=25 [partition-e]=45
    [sigstop-master]=35 [stale-sentinel]=45 [proxy-restart]=25 [reload]=25
    [failover-every-30s]=95
)

# Hosts: index k has the address $NET.(4k+2)/30, its hub side $NET.(4k+1).
HOSTS=(client r1 r2 r3 s1 s2 s3)
declare -A IP NS
for k in "${!HOSTS[@]}"; do
    IP[${HOSTS[$k]}]=$NET.$((4 * k + 2))
    NS[${HOSTS[$k]}]=$NS_PREFIX-${HOSTS[$k]}
done
HUB=$NS_PREFIX-hub
CLIENT=${IP[client]}
SENTINELS="${IP[s1]}:26379,${IP[s2]}:26379,${IP[s3]}:26379"
RS_PORT=6379
HA_PORT=16379
declare -A PORT=([haproxy-rs]=$RS_PORT [haproxy]=$HA_PORT)
RUN=$OUT/run
LOGS=$OUT/logs
PIDS=()
RULES=()
RS_PID=
HA_PID=
WATCHDOG=

log() { printf 'chaos: %s\n' "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

# on_host HOST CMD...: runs CMD in HOST's namespace.
on_host() {
    local host=$1
    shift
    ip netns exec "${NS[$host]}" "$@"
}

# cli HOST ADDR PORT ARGS...: redis-cli from HOST (2 s at most).
cli() {
    local host=$1 addr=$2 port=$3
    shift 3
    on_host "$host" timeout 2 redis-cli -h "$addr" -p "$port" "$@" 2>/dev/null
}

cleanup() {
    set +e
    heal
    local pid ns
    for pid in "${PIDS[@]}" $RS_PID $HA_PID; do
        kill "$pid" 2>/dev/null
    done
    for pid in "${PIDS[@]}" $RS_PID $HA_PID; do
        timeout 5 tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null
    done
    # Whatever else runs in the namespaces is ours too (an old HAProxy still draining, a new haproxy-rs).
    for ns in "${NS[@]}" "$HUB"; do
        for pid in $(ip netns pids "$ns" 2>/dev/null); do
            kill -9 "$pid" 2>/dev/null
        done
        ip netns del "$ns" 2>/dev/null
    done
    [ -n "$WATCHDOG" ] && kill "$WATCHDOG" 2>/dev/null
    return 0
}

# --- the net -------------------------------------------------------------------------------------------

net_up() {
    local k host ns
    for ns in "${NS[@]}" "$HUB"; do
        ip netns del "$ns" 2>/dev/null || true # left by a run that was killed
    done
    ip netns add "$HUB"
    ip -n "$HUB" link set lo up
    ip netns exec "$HUB" sh -c 'echo 1 > /proc/sys/net/ipv4/ip_forward'
    for k in "${!HOSTS[@]}"; do
        host=${HOSTS[$k]}
        ns=${NS[$host]}
        ip netns add "$ns"
        ip link add "${NS_PREFIX}h$k" type veth peer name "${NS_PREFIX}e$k"
        ip link set "${NS_PREFIX}h$k" netns "$HUB"
        ip link set "${NS_PREFIX}e$k" netns "$ns"
        ip -n "$HUB" addr add "$NET.$((4 * k + 1))/30" dev "${NS_PREFIX}h$k"
        ip -n "$HUB" link set "${NS_PREFIX}h$k" up
        ip -n "$ns" link set lo up
        ip -n "$ns" addr add "${IP[$host]}/30" dev "${NS_PREFIX}e$k"
        ip -n "$ns" link set "${NS_PREFIX}e$k" up
        ip -n "$ns" route add default via "$NET.$((4 * k + 1))"
    done
}

# subnet HOST: the /30 a cut names.
subnet() {
    local ip=${IP[$1]}
    echo "${ip%.*}.$((${ip##*.} - 2))/30"
}

# cut "A B.." "C D..": the hub drops every packet between a host of the first list and one of the second.
cut() {
    local a b rule
    for a in $1; do
        for b in $2; do
            for rule in "from $(subnet "$a") to $(subnet "$b")" "from $(subnet "$b") to $(subnet "$a")"; do
                # shellcheck disable=SC2086 # the rule is words
                ip -n "$HUB" rule add $rule blackhole priority 100
                RULES+=("$rule")
            done
        done
    done
}

heal() {
    local rule
    for rule in "${RULES[@]}"; do
        # shellcheck disable=SC2086
        ip -n "$HUB" rule del $rule blackhole priority 100 2>/dev/null || true
    done
    RULES=()
}

# --- servers and sentinels -----------------------------------------------------------------------------

declare -A PID_OF

# spawn NAME HOST CMD...: CMD in HOST's namespace, in the background, logging to logs/NAME.log.
spawn() {
    local name=$1 host=$2
    shift 2
    # A simple command, not a function: $! is then the process itself (ip netns exec execs it), which
    # SIGSTOP and kill reach.
    ip netns exec "${NS[$host]}" "$@" >>"$LOGS/$name.log" 2>&1 &
    PID_OF[$name]=$!
    PIDS+=("$!")
}

start_redis() {
    local host=$1 replicaof=${2:-}
    mkdir -p "$RUN/$host"
    local args=(--bind "${IP[$host]}" --port 6379 --protected-mode no --save '' --appendonly no
        --dir "$RUN/$host" --repl-diskless-sync yes --repl-diskless-sync-delay 0)
    [ -n "$replicaof" ] && args+=(--replicaof "$replicaof" 6379)
    spawn "$host" "$host" redis-server "${args[@]}"
}

sentinel_conf() {
    local host=$1
    cat <<EOF
port 26379
bind ${IP[$host]}
protected-mode no
dir $RUN/$host
sentinel resolve-hostnames no
sentinel monitor mymaster ${IP[r1]} 6379 2
sentinel down-after-milliseconds mymaster 3000
sentinel failover-timeout mymaster 10000
sentinel parallel-syncs mymaster 1
EOF
}

start_sentinel() {
    local host=$1
    spawn "$host" "$host" redis-sentinel "$RUN/$host/sentinel.conf"
}

# master: the master's address as s2 names it (s2 is on the majority side of every cut here).
master() {
    cli client "${IP[s2]}" 26379 SENTINEL get-master-addr-by-name mymaster | head -1 || true
}

# host_of ADDR: the host with that address.
host_of() {
    local h
    for h in "${HOSTS[@]}"; do
        [ "${IP[$h]}" = "$1" ] && echo "$h" && return
    done
}

# ready: every sentinel names the same master and sees the other two, the master has both replicas online,
# and both proxies write to it (6 new connections in a row each).
ready() {
    local m s name i
    m=$(master)
    [ -n "$m" ] || return 1
    for s in s1 s2 s3; do
        [ "$(cli client "${IP[$s]}" 26379 SENTINEL get-master-addr-by-name mymaster | head -1)" = "$m" ] ||
            return 1
        [ "$(cli client "${IP[$s]}" 26379 SENTINEL master mymaster | grep -A1 -x num-other-sentinels |
            tail -1)" = 2 ] || return 1
    done
    [ "$(cli client "$m" 6379 INFO replication | grep -c 'state=online')" = 2 ] || return 1
    for name in $TARGETS; do
        for i in 1 2 3 4 5 6; do
            cli client "$CLIENT" "${PORT[$name]}" SET chaos:ready "$i" | grep -qx OK || return 1
        done
    done
}

# settle: heals the net, wakes and restarts what a scenario stopped, and waits until ready (2 minutes at
# most).
settle() {
    local name i
    heal
    for name in r1 r2 r3 s1 s2 s3; do
        kill -CONT "${PID_OF[$name]}" 2>/dev/null || true
        if ! kill -0 "${PID_OF[$name]}" 2>/dev/null; then
            log "restarting $name"
            case $name in
                r*) start_redis "$name" "$(master)" ;;
                s*) start_sentinel "$name" ;;
            esac
        fi
    done
    until_ready 240
    # Each scenario starts from an empty dataset: a full resync of what earlier ones wrote (millions of
    # keys) took long enough for Sentinel to promote a replica still loading it.
    cli client "$(master)" 6379 FLUSHALL >/dev/null
    until_ready 240
}

# until_ready N: waits until ready, N half-seconds at most.
until_ready() {
    local i
    for ((i = 0; i < $1; i++)); do
        ready && return 0
        sleep 0.5
    done
    die "the topology did not settle within $(($1 / 2)) s (logs in $LOGS)"
}

topology_up() {
    local h
    start_redis r1
    start_redis r2 "${IP[r1]}"
    start_redis r3 "${IP[r1]}"
    for h in s1 s2 s3; do
        mkdir -p "$RUN/$h"
        sentinel_conf "$h" >"$RUN/$h/sentinel.conf"
        start_sentinel "$h"
    done
}

# --- the proxies ---------------------------------------------------------------------------------------

proxies_up() {
    cat >"$RUN/haproxy-rs.toml" <<EOF
listen = "$CLIENT:$RS_PORT"
read_listen = "$CLIENT:6380"
stats = "$CLIENT:8404"

[sentinel]
addrs = ["${IP[s1]}:26379", "${IP[s2]}:26379", "${IP[s3]}:26379"]
master_name = "mymaster"

[upgrade]
socket = "$RUN/haproxy-rs-upgrade.sock"
EOF
    # config/haproxy.cfg's checks, on this net's addresses; a stats socket that hands the listeners over on
    # reload (-x), as a seamless HAProxy reload does.
    sed -e "s/127\.0\.0\.1:6391/${IP[r1]}:6379/; s/127\.0\.0\.1:6392/${IP[r2]}:6379/" \
        -e "s/127\.0\.0\.1:6393/${IP[r3]}:6379/; s/bind 127\.0\.0\.1:/bind $CLIENT:/" \
        -e "s|^global\$|global\n    stats socket $RUN/haproxy.sock mode 600 level admin expose-fd listeners|" \
        config/haproxy.cfg >"$RUN/haproxy.cfg"
    on_host client haproxy -c -q -f "$RUN/haproxy.cfg" || die "HAProxy refuses $RUN/haproxy.cfg"
    start_rs
    start_haproxy
}

start_rs() {
    ip netns exec "${NS[client]}" "$BIN" run -c "$RUN/haproxy-rs.toml" "$@" >>"$LOGS/haproxy-rs.log" 2>&1 &
    RS_PID=$!
}

start_haproxy() {
    ip netns exec "${NS[client]}" haproxy -db -f "$RUN/haproxy.cfg" "$@" >>"$LOGS/haproxy.log" 2>&1 &
    HA_PID=$!
}

# --- faults ----------------------------------------------------------------------------------------------

LOAD_START=0
# at T: sleeps until T seconds into the load (at once if that has passed).
at() {
    local left=$((LOAD_START + $1 - SECONDS))
    [ "$left" -le 0 ] || sleep "$left"
}

# The master's host and the other two servers, now.
minority_majority() {
    local m r others=""
    m=$(host_of "$(master)")
    for r in r1 r2 r3; do
        [ "$r" != "$m" ] && others="$others $r"
    done
    MINORITY="client $m s1"
    MAJORITY="$others s2 s3"
}

fault_partition-a() {
    minority_majority
    log "cut {$MINORITY} from {$MAJORITY} for 15 s"
    cut "$MINORITY" "$MAJORITY"
    sleep 15
    heal
}

fault_partition-b() {
    log "cut the client side from the sentinels for 10 s"
    cut client "s1 s2 s3"
    sleep 10
    heal
}

fault_partition-c() {
    log "cut s3 from everything for 10 s"
    cut s3 "client r1 r2 r3 s1 s2"
    sleep 10
    heal
}

fault_partition-d() {
    local m r replica
    m=$(host_of "$(master)")
    for r in r1 r2 r3; do
        [ "$r" != "$m" ] && replica=$r
    done
    log "cut the replica $replica from everything for 10 s"
    cut "$replica" "$(echo client r1 r2 r3 s1 s2 s3 | tr ' ' '\n' | grep -vx "$replica" | tr '\n' ' ')"
    sleep 10
    heal
}

fault_partition-e() {
    local i
    minority_majority
    log "cut {$MINORITY} from {$MAJORITY}, 1 s on, 1 s off, for 30 s"
    for ((i = 0; i < 15; i++)); do
        cut "$MINORITY" "$MAJORITY"
        sleep 1
        heal
        sleep 1
    done
}

fault_sigstop-master() {
    local m
    m=$(host_of "$(master)")
    log "SIGSTOP of the master ($m) for 10 s"
    kill -STOP "${PID_OF[$m]}"
    sleep 10
    kill -CONT "${PID_OF[$m]}"
}

# failover: once both replicas are online (20 s at most: a planned failover by an operator who looks
# first), SENTINEL FAILOVER, then waits (20 s at most) until every sentinel names the new master.
failover() {
    local old new s i
    old=$(master)
    for ((i = 0; i < 100; i++)); do
        [ "$(cli client "$old" 6379 INFO replication | grep -c 'state=online')" = 2 ] && break
        sleep 0.2
    done
    cli client "${IP[s2]}" 26379 SENTINEL failover mymaster >/dev/null || true
    for ((i = 0; i < 100; i++)); do
        new=$(master)
        if [ -n "$new" ] && [ "$new" != "$old" ]; then
            for s in s1 s3; do
                [ "$(cli client "${IP[$s]}" 26379 SENTINEL get-master-addr-by-name mymaster | head -1)" = \
                    "$new" ] || continue 2
            done
            log "failover: $old -> $new"
            return 0
        fi
        sleep 0.2
    done
    log "failover from $old did not complete within 20 s"
}

STALE_CONF=
snapshot_sentinel_conf() {
    STALE_CONF=$RUN/s1-sentinel.conf.stale
    cp "$RUN/s1/sentinel.conf" "$STALE_CONF"
}

fault_stale-sentinel() {
    failover
    sleep 3
    log "restart s1 with its sentinel.conf from before the failover"
    kill "${PID_OF[s1]}"
    timeout 5 tail --pid="${PID_OF[s1]}" -f /dev/null || kill -9 "${PID_OF[s1]}" 2>/dev/null || true
    cp "$STALE_CONF" "$RUN/s1/sentinel.conf"
    start_sentinel s1
    sleep 10
}

fault_proxy-restart() {
    local old_rs=$RS_PID old_ha=$HA_PID
    if [[ " $TARGETS " = *" haproxy-rs "* ]]; then
        log "haproxy-rs: run --takeover (upgrade in place)"
        start_rs --takeover "$RUN/haproxy-rs-upgrade.sock"
        PIDS+=("$old_rs")
    fi
    if [[ " $TARGETS " = *" haproxy "* ]]; then
        log "HAProxy: reload (-x $RUN/haproxy.sock -sf $old_ha)"
        start_haproxy -x "$RUN/haproxy.sock" -sf "$old_ha"
        PIDS+=("$old_ha")
    fi
    sleep 8
}

# Three config reloads 5 s apart: haproxy-rs gets SIGHUP with a changed max_pipeline each time (a live
# change, applied to connected clients too); HAProxy reloads the way it does, a new process taking the
# listeners over (-x) and the old one finishing its connections (-sf).
fault_reload() {
    local i pipeline old_ha
    for i in 1 2 3; do
        if [[ " $TARGETS " = *" haproxy-rs "* ]]; then
            pipeline=$((1024 - i))
            if grep -q '^max_pipeline' "$RUN/haproxy-rs.toml"; then
                sed -i "s/^max_pipeline = .*/max_pipeline = $pipeline/" "$RUN/haproxy-rs.toml"
            else
                sed -i "1i max_pipeline = $pipeline" "$RUN/haproxy-rs.toml"
            fi
            log "haproxy-rs: SIGHUP (max_pipeline = $pipeline)"
            kill -HUP "$RS_PID"
        fi
        if [[ " $TARGETS " = *" haproxy "* ]]; then
            old_ha=$HA_PID
            log "HAProxy: reload (-x $RUN/haproxy.sock -sf $old_ha)"
            start_haproxy -x "$RUN/haproxy.sock" -sf "$old_ha"
            PIDS+=("$old_ha")
        fi
        sleep 5
    done
}

fault_failover-every-30s() {
    local t
    for t in 10 40 70; do
        at "$t"
        failover
    done
    at 85
}

# --- one scenario ----------------------------------------------------------------------------------------

run_scenario() {
    local name=$1 duration=${DURATION_OF[$1]} target pids=() pid rc=0
    settle
    [ "$name" = stale-sentinel ] && snapshot_sentinel_conf
    log "scenario $name: ${duration}s of load through $TARGETS"
    for target in $TARGETS; do
        ip netns exec "${NS[client]}" timeout $((duration + 120)) "$BIN" bench --target "$CLIENT:${PORT[$target]}" \
            --sentinel "${IP[s2]}:26379,${IP[s1]}:26379,${IP[s3]}:26379" --track -q -d "${duration}s" \
            --warmup 1s -c "$CLIENTS" --threads 1 --ratio "$RATIO" --timeout 15s \
            --json "$OUT/$name-$target.json" --html "$OUT/$name-$target.html" \
            >"$OUT/$name-$target.txt" 2>&1 &
        pids+=("$!")
    done
    LOAD_START=$((SECONDS + 1)) # after the bench's warm-up
    at "$FAULT_AT"
    "fault_$name"
    for pid in "${pids[@]}"; do
        wait "$pid" || rc=$?
    done
    [ "$rc" = 0 ] || log "a bench of $name failed ($rc): see $OUT/$name-*.txt"
    for target in $TARGETS; do
        row "$name" "$target" | tee -a "$OUT/rows.md"
    done
}

# row SCENARIO TARGET: the scenario's Markdown table row for TARGET, from its bench report.
row() {
    python3 - "$OUT/$1-$2.json" "$1" "$2" <<'EOF'
import json, pathlib, sys

path, scenario, target = pathlib.Path(sys.argv[1]), sys.argv[2], sys.argv[3]
if not path.exists():
    print(f"| {scenario} | {target} | bench failed | - | - | - | - | - | - | - |")
    sys.exit()
r = json.loads(path.read_text())
f = r.get("failover") or {}
start, end = f.get("error_window_start_s"), f.get("error_window_end_s")
window = (f"{end - start:.2f} s" if end is not None else f"from {start:.1f} s, not recovered") \
    if start is not None else "none"
kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.get("errors_by_kind", {}).items())) or "-"
# Seconds below a tenth of the median second's throughput: a stall shows here even when the requests it
# held failed (the longest request counts successful ones only).
ops = sorted(s["ops"] for s in r.get("timeline", []))
median = ops[len(ops) // 2] if ops else 0
stalled = sum(1 for s in r.get("timeline", []) if s["ops"] < median / 10)
print("| " + " | ".join([
    scenario, target, str(r.get("errors", 0)), kinds, window,
    f"{f.get('lost_writes', 0)} of {f.get('acked_writes', 0)}", str(f.get("stale_reads", 0)),
    f"{r.get('latency_us', {}).get('max', 0) / 1000:.0f} ms", str(stalled), f"{r.get('throughput', 0):.0f}",
]) + " |")
EOF
}

# --- main ------------------------------------------------------------------------------------------------

SCENARIOS=${*:-$ALL_SCENARIOS}
for s in $SCENARIOS; do
    [ -n "${DURATION_OF[$s]:-}" ] && declare -F "fault_$s" >/dev/null || die "unknown scenario $s (one of:" \
        $ALL_SCENARIOS")"
done
for t in $TARGETS; do
    [ -n "${PORT[$t]:-}" ] || die "unknown target $t (haproxy-rs, haproxy)"
done
[ "$(id -u)" = 0 ] || die "needs root (network namespaces)"
[ -x "$BIN" ] || die "no $BIN: cargo build --release --locked"
for tool in ip redis-server redis-sentinel redis-cli haproxy python3; do
    command -v "$tool" >/dev/null || die "needs $tool"
done

trap cleanup EXIT
trap 'log "stopped by a signal (or MAX_SECONDS, $MAX_SECONDS, reached)"; exit 130' INT TERM
# The watchdog keeps no descriptor of ours open (a pipe reading our output would wait for it).
(
    for ((i = 0; i < MAX_SECONDS; i++)); do sleep 1; done
    kill -TERM $$
) </dev/null >/dev/null 2>&1 &
WATCHDOG=$!

rm -rf "$RUN" "$LOGS" "$OUT/rows.md"
mkdir -p "$OUT" "$RUN" "$LOGS"
net_up
topology_up
proxies_up
for s in $SCENARIOS; do
    run_scenario "$s"
done
{
    echo "| scenario | endpoint | errors | errors by kind | error window | acked writes lost | stale reads" \
        "| longest request | seconds stalled | req/s |"
    echo "|---|---|---:|---|---:|---:|---:|---:|---:|---:|"
    cat "$OUT/rows.md"
} >"$OUT/chaos.md"
cat "$OUT/chaos.md"
