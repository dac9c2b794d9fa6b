# Sourced by the scripts that start processes of their own: `log` and `die` under the script's name,
# and every pid pushed onto PIDS stopped when the script exits (SIGTERM, then SIGKILL after
# STOP_WAIT seconds, default 5), then `on_exit` run if the script defines one. Ctrl-C exits with 130.
SCRIPT_NAME=${SCRIPT_NAME:-$(basename "$0" .sh)}
STOP_WAIT=${STOP_WAIT:-5}
PIDS=()

log() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }
die() {
    log "error: $*"
    exit 1
}

stop_children() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        timeout "$STOP_WAIT" tail --pid="$pid" -f /dev/null 2>/dev/null || kill -9 "$pid" 2>/dev/null || true
    done
    if declare -F on_exit >/dev/null; then
        on_exit
    fi
}
trap stop_children EXIT
trap 'exit 130' INT TERM
