#!/usr/bin/env bash
# haproxy-rs beside HAProxy (config/haproxy.cfg: tcp-check role:master, inter 1s fall 2 rise 2,
# on-marked-down shutdown-sessions) in a planned (SENTINEL FAILOVER) and a kill (SIGKILL of the master)
# failover of the lab, from one run, as a Markdown table: errors, longest error window, acknowledged
# writes lost, highest latency.
#
#   scripts/failover-compare.sh        runs scripts/bench-failover.sh (lab up, both proxies, 4 runs)
#
# Same environment as scripts/bench-failover.sh (TARGETS, KINDS, DURATION, FAILOVER_AT, CLIENTS, OUT, ...);
# REPORT_ONLY=1 only prints the table of the reports already in OUT.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-$ROOT/.lab/failover}
export OUT
if [ "${REPORT_ONLY:-0}" != 1 ]; then
    bash "$ROOT/scripts/bench-failover.sh" >&2
fi

python3 - "$OUT" <<'EOF'
import json, pathlib, sys

out = pathlib.Path(sys.argv[1])
rows = []
for kind in ("planned", "kill"):
    for target in ("haproxy-rs", "haproxy"):
        path = out / f"{target}-{kind}.json"
        if not path.exists():
            continue
        r = json.loads(path.read_text())
        f = r.get("failover") or {}
        start, end = f.get("error_window_start_s"), f.get("error_window_end_s")
        window = f"{end - start:.2f} s" if start is not None and end is not None else "none"
        kinds = ", ".join(f"{k} {v}" for k, v in sorted(r.get("errors_by_kind", {}).items())) or "-"
        rows.append((
            kind, target, str(r.get("errors", 0)), kinds, window,
            f"{f.get('lost_writes', 0)} of {f.get('acked_writes', 0)}",
            str(f.get("stale_reads", 0)),
            f"{f.get('max_latency_us', 0) / 1000:.0f} ms",
            f"{r.get('throughput', 0):.0f}",
        ))
print("| failover | endpoint | errors | errors by kind | error window | acked writes lost | stale reads "
      "| highest latency | req/s |")
print("|---|---|---:|---|---:|---:|---:|---:|---:|")
for row in rows:
    print("| " + " | ".join(row) + " |")
EOF
