#!/usr/bin/env bash
# Soak: haproxy-rs under a steady load for DURATION, with a planned failover every 30 s and a config
# reload (SIGHUP) every minute, sampling the proxy's RSS, open file descriptors, threads and tasks every
# 10 s. Fails when anything acknowledged is lost, or when RSS or descriptors drift upward by more than
# 10% after the warm-up. Prints one result line; writes samples.csv, soak.svg (the curves), the bench
# report and the proxy's log to OUT.
#
#   scripts/soak.sh [DURATION]      DURATION as bench takes it: 30m (default), 1h, 120s
#
# Environment:
#   SENTINELS      sentinels to follow and fail over (default: scripts/lab.sh's, and the lab is started)
#   MASTER_NAME    default mymaster
#   HAPROXY_RS     the binary (default target/release/haproxy-rs, built when missing)
#   PORT, STATS    the proxy's client and stats ports (default 16479, 18479)
#   CLIENTS, RPS   bench's connections and its paced rate (default 20, 2000)
#   FAILOVER_EVERY, RELOAD_EVERY, SAMPLE_EVERY   seconds (default 30, 60, 10)
#   WARMUP         seconds before the drift baseline is taken (default 60, at most a third of DURATION)
#   OUT            default .lab/soak
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
DURATION=${1:-30m}
MASTER_NAME=${MASTER_NAME:-mymaster}
BIN=${HAPROXY_RS:-$ROOT/target/release/haproxy-rs}
PORT=${PORT:-16479}
STATS=${STATS:-18479}
CLIENTS=${CLIENTS:-20}
RPS=${RPS:-2000}
FAILOVER_EVERY=${FAILOVER_EVERY:-30}
RELOAD_EVERY=${RELOAD_EVERY:-60}
SAMPLE_EVERY=${SAMPLE_EVERY:-10}
OUT=${OUT:-$ROOT/.lab/soak}
STOP_WAIT=10
# shellcheck source=lib/children.sh
. "$ROOT/scripts/lib/children.sh"

# Seconds in DURATION (s, m, h or plain seconds).
seconds() {
    case $1 in
        *h) echo $((${1%h} * 3600)) ;;
        *m) echo $((${1%m} * 60)) ;;
        *s) echo "${1%s}" ;;
        *) echo "$1" ;;
    esac
}
TOTAL=$(seconds "$DURATION")
[ "$TOTAL" -ge 30 ] 2>/dev/null || die "DURATION must be at least 30s (got $DURATION)"
WARMUP=${WARMUP:-60}
[ "$WARMUP" -le $((TOTAL / 3)) ] || WARMUP=$((TOTAL / 3))

mkdir -p "$OUT"
rm -f "$OUT"/samples.csv "$OUT"/bench.json "$OUT"/soak.svg
if [ -z "${SENTINELS:-}" ]; then
    bash scripts/lab.sh up
    SENTINELS=127.0.0.1:26391,127.0.0.1:26392,127.0.0.1:26393
fi
if [ -z "${HAPROXY_RS:-}" ] && { [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; }; then
    log "cargo build --release"
    timeout 1800 cargo build --release --locked --quiet
fi
FIRST_SENTINEL=${SENTINELS%%,*}
sentinel_cli() { timeout 5 redis-cli -h "${FIRST_SENTINEL%:*}" -p "${FIRST_SENTINEL##*:}" "$@"; }

# The proxy's config; a reload flips max_pipeline between two values, so each one applies something.
addrs=$(printf '"%s", ' ${SENTINELS//,/ })
write_config() {
    cat >"$OUT/proxy.toml" <<EOF
listen = "127.0.0.1:$PORT"
stats = "127.0.0.1:$STATS"
max_pipeline = $1

[sentinel]
addrs = [${addrs%, }]
master_name = "$MASTER_NAME"
EOF
}
write_config 1024
"$BIN" run -c "$OUT/proxy.toml" >"$OUT/proxy.log" 2>&1 &
PROXY=$!
PIDS+=("$PROXY")
for _ in $(seq 1 300); do
    if [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$STATS/healthz")" = 200 ]; then
        break
    fi
    kill -0 "$PROXY" 2>/dev/null || die "the proxy exited; see $OUT/proxy.log"
    sleep 0.1
done
log "proxy $PROXY on 127.0.0.1:$PORT; $DURATION under $CLIENTS clients at $RPS req/s"

"$BIN" bench --target "127.0.0.1:$PORT" --sentinel "$SENTINELS" --master-name "$MASTER_NAME" --track \
    -d "${TOTAL}s" -c "$CLIENTS" --rps "$RPS" --ratio 1:1 --timeout 15s -q \
    --json "$OUT/bench.json" >"$OUT/bench.txt" 2>"$OUT/bench.log" &
BENCH=$!
PIDS+=("$BENCH")

echo "t_s,rss_kb,fds,threads,sessions,tasks,failovers,reloads" >"$OUT/samples.csv"
sample() {
    local t=$1 rss fds threads json
    rss=$(awk '/^VmRSS/ { print $2 }' "/proc/$PROXY/status" 2>/dev/null || echo 0)
    fds=$(find "/proc/$PROXY/fd" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    threads=$(find "/proc/$PROXY/task" -mindepth 1 -maxdepth 1 2>/dev/null | wc -l)
    json=$(curl -s --max-time 5 "http://127.0.0.1:$STATS/stats.json" || echo '{}')
    python3 -c '
import json, sys
s = json.loads(sys.argv[1] or "{}")
t = s.get("tasks", {})
print(t.get("sessions", 0), t.get("background", 0), s.get("failovers_total", 0),
      s.get("reloads", {}).get("applied_total", 0))' "$json" | {
        read -r sessions tasks failovers reloads
        echo "$t,$rss,$fds,$threads,$sessions,$tasks,$failovers,$reloads" >>"$OUT/samples.csv"
    }
}

start=$(date +%s)
failovers=0
reloads=0
next_failover=$FAILOVER_EVERY
next_reload=$RELOAD_EVERY
next_sample=0
pipeline=1024
while kill -0 "$BENCH" 2>/dev/null; do
    t=$(($(date +%s) - start))
    [ "$t" -le $((TOTAL + 120)) ] || die "bench still running 120 s past $DURATION"
    kill -0 "$PROXY" 2>/dev/null || die "the proxy exited; see $OUT/proxy.log"
    if [ "$t" -ge "$next_sample" ]; then
        sample "$t"
        next_sample=$((next_sample + SAMPLE_EVERY))
    fi
    if [ "$t" -ge "$next_failover" ] && [ "$t" -lt $((TOTAL - 10)) ]; then
        if sentinel_cli SENTINEL FAILOVER "$MASTER_NAME" | grep -q OK; then
            failovers=$((failovers + 1))
        else
            log "t=${t}s: SENTINEL FAILOVER refused (one still under way?)"
        fi
        next_failover=$((next_failover + FAILOVER_EVERY))
    fi
    if [ "$t" -ge "$next_reload" ]; then
        pipeline=$((pipeline == 1024 ? 1000 : 1024))
        write_config "$pipeline"
        kill -HUP "$PROXY"
        reloads=$((reloads + 1))
        next_reload=$((next_reload + RELOAD_EVERY))
    fi
    sleep 1
done
wait "$BENCH" || log "bench exited with $?"
applied=$(curl -s --max-time 5 "http://127.0.0.1:$STATS/stats.json" |
    python3 -c 'import json, sys; print(json.load(sys.stdin).get("reloads", {}).get("applied_total", 0))' || echo 0)

python3 - "$OUT" "$WARMUP" "$failovers" "$reloads" "$applied" <<'EOF'
import csv, json, pathlib, statistics, sys

out, warmup, failovers, reloads, applied = (pathlib.Path(sys.argv[1]), *map(int, sys.argv[2:6]))
rows = [{k: int(v) for k, v in r.items()} for r in csv.DictReader(open(out / "samples.csv"))]
report = json.loads((out / "bench.json").read_text()) if (out / "bench.json").exists() else {}
f = report.get("failover") or {}
acked, lost = f.get("acked_writes", 0), f.get("lost_writes", 0)
errors = report.get("errors", 0)

problems = []
after = [r for r in rows if r["t_s"] >= warmup]
drift = {}
if len(after) >= 3:
    # Baseline: the median of the first third after the warm-up; end: the median of the last third.
    third = max(1, len(after) // 3)
    for key in ("rss_kb", "fds", "tasks"):
        base = statistics.median(r[key] for r in after[:third])
        end = statistics.median(r[key] for r in after[-third:])
        drift[key] = (end - base) / base if base else 0.0
        if key in ("rss_kb", "fds") and drift[key] > 0.10:
            problems.append(f"{key} grew {drift[key]:+.0%} after the warm-up ({base:.0f} -> {end:.0f})")
else:
    problems.append(f"too few samples after the warm-up ({len(after)})")
if not report:
    problems.append("no bench report")
if lost:
    problems.append(f"{lost} acknowledged writes lost")
if applied < reloads:
    problems.append(f"{reloads} reloads sent, {applied} applied")

# The curves, one panel each, as a small SVG.
def panel(key, label, y0):
    w, h, left = 720, 110, 60
    ts = [r["t_s"] for r in rows] or [0]
    vs = [r[key] for r in rows] or [0]
    tmax, vmax = max(ts) or 1, max(vs) or 1
    pts = " ".join(f"{left + (t / tmax) * (w - left - 10):.1f},{y0 + h - (v / vmax) * h:.1f}" for t, v in zip(ts, vs))
    return (f'<text x="4" y="{y0 + 12}" font-size="11">{label} (max {vmax})</text>'
            f'<line x1="{left}" y1="{y0 + h}" x2="{w - 10}" y2="{y0 + h}" stroke="#999"/>'
            f'<polyline fill="none" stroke="#2060c0" stroke-width="1.5" points="{pts}"/>')
panels = [("rss_kb", "RSS (KiB)"), ("fds", "open descriptors"), ("tasks", "background tasks"), ("sessions", "client sessions")]
svg = ['<svg xmlns="http://www.w3.org/2000/svg" width="720" height="%d" font-family="sans-serif">' % (len(panels) * 130 + 20)]
svg += [panel(k, l, 10 + i * 130) for i, (k, l) in enumerate(panels)]
tmax = max((r["t_s"] for r in rows), default=0)
svg.append(f'<text x="60" y="{len(panels) * 130 + 15}" font-size="11">0 .. {tmax} s; {failovers} failovers, {reloads} reloads</text></svg>')
(out / "soak.svg").write_text("\n".join(svg))

first = after[0] if after else (rows[0] if rows else {})
last = rows[-1] if rows else {}
print(f"soak: {tmax} s, {failovers} failovers, {reloads} reloads; requests {report.get('ops', 0)}, "
      f"errors {errors}, acknowledged writes {acked}, lost {lost}; "
      f"RSS {first.get('rss_kb', 0)} -> {last.get('rss_kb', 0)} KiB, fds {first.get('fds', 0)} -> {last.get('fds', 0)}, "
      f"tasks {first.get('tasks', 0)} -> {last.get('tasks', 0)}; drift after warm-up: "
      + ", ".join(f"{k} {v:+.1%}" for k, v in drift.items()))
for p in problems:
    print(f"soak: FAIL: {p}")
sys.exit(1 if problems else 0)
EOF
