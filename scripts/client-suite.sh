#!/usr/bin/env bash
# A second opinion nobody here wrote: redis-py's own test suite (from its source distribution on PyPI), run
# against Redis directly and through haproxy-rs, in Sentinel mode and in cluster mode; prints both pass/fail
# counts and the tests that fail only through the proxy. Not part of CI (it takes about 10 minutes).
#
#   scripts/client-suite.sh [sentinel|cluster|all]     (default: all)
#
# Environment:
#   REDIS_PY_VERSION   the redis-py release whose tests run (default 8.1.0)
#   SUITE_FILES        the test files, relative to the sdist (default: the core command, pipeline, pub/sub,
#                      scripting, connection and cluster files below)
#   SUITE_DIR          where the sdist, the virtualenv and the results go (default .lab/client-suite)
#   HAPROXY_RS         the binary (default target/release/haproxy-rs, built when missing)
#   REUSE_DIRECT       when 1, the direct runs' results from an earlier run (in SUITE_DIR) are kept and only
#                      the runs through the proxy are done again
#
# Topologies: scripts/lab.sh's Sentinel lab (master 6391, replicas 6392-6393) with the proxy from
# config/haproxy-rs.toml on 6379, and its cluster (6401-6406) with the proxy from config/cluster.toml on 6379.
# Directly, the suite talks to the lab's master (Sentinel mode) or to the cluster's first node (cluster mode,
# where redis-py's cluster client finds the six nodes); through the proxy, to 127.0.0.1:6379, which cluster
# clients see as a one-node cluster.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
MODE=${1:-all}
VERSION=${REDIS_PY_VERSION:-8.1.0}
DIR=${SUITE_DIR:-$ROOT/.lab/client-suite}
BIN=${HAPROXY_RS:-$ROOT/target/release/haproxy-rs}
PROXY_PORT=6379
FILES=${SUITE_FILES:-"tests/test_commands.py tests/test_pipeline.py tests/test_pubsub.py tests/test_scripting.py
  tests/test_function.py tests/test_lock.py tests/test_encoding.py tests/test_connection.py tests/test_monitor.py
  tests/test_keyspace_notifications.py tests/test_hash.py tests/test_client.py tests/test_connection_pool.py
  tests/test_retry.py"}
CLUSTER_FILES="tests/test_cluster.py tests/test_cluster_transaction.py"
# Against a cluster directly, test_auth's teardown leaves a node with a password (it re-authenticates
# on one node and clears requirepass on another), and every test after it fails on setup; through
# the proxy it is refused (commands.refuse_proxy_lockout). Left out of both cluster runs.
CLUSTER_DESELECT="--deselect tests/test_commands.py::TestRedisCommands::test_auth"

log() { printf 'client-suite: %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

case $MODE in sentinel | cluster | all) ;; *) die "usage: $0 [sentinel|cluster|all]" ;; esac

# The sdist (it carries tests/ and conftest.py) and a virtualenv with the library and pytest.
prepare_suite() {
    mkdir -p "$DIR"
    SRC=$DIR/redis-$VERSION
    if [ ! -d "$SRC/tests" ]; then
        log "downloading redis-py $VERSION's source distribution"
        python3 -m pip download --quiet --no-deps --no-binary :all: --dest "$DIR" "redis==$VERSION"
        tar -xzf "$DIR/redis-$VERSION.tar.gz" -C "$DIR"
    fi
    if [ ! -x "$DIR/venv/bin/pytest" ]; then
        log "virtualenv with redis-py $VERSION and pytest"
        python3 -m venv "$DIR/venv"
        "$DIR/venv/bin/pip" install --quiet pytest pytest-asyncio pytest-timeout "$SRC"
    fi
}

build_proxy() {
    if [ ! -x "$BIN" ] || [ -n "$(find src Cargo.toml Cargo.lock -newer "$BIN" -print -quit)" ]; then
        log "building the release binary"
        cargo build --release --locked --quiet
    fi
}

PROXY_PID=
stop_proxy() {
    if [ -n "$PROXY_PID" ]; then
        kill "$PROXY_PID" 2>/dev/null || true
        wait "$PROXY_PID" 2>/dev/null || true
        PROXY_PID=
    fi
}
trap stop_proxy EXIT

start_proxy() {
    local config=$1
    "$BIN" run -c "$config" >"$DIR/proxy-$2.log" 2>&1 &
    PROXY_PID=$!
    local i
    for i in $(seq 1 100); do
        if redis-cli -p "$PROXY_PORT" ping 2>/dev/null | grep -q PONG; then
            return 0
        fi
        sleep 0.1
    done
    die "the proxy did not answer on $PROXY_PORT; see $DIR/proxy-$2.log"
}

# run_suite NAME URL CLUSTER_NODES FILES...: one pytest run, results in $DIR/NAME.xml.
run_suite() {
    local name=$1 url=$2 nodes=$3
    shift 3
    if [ "${REUSE_DIRECT:-0}" = 1 ] && [[ $name == *-direct ]] && [ -s "$DIR/$name.xml" ]; then
        log "$name: keeping the results of an earlier run ($DIR/$name.xml)"
        return 0
    fi
    log "$name: redis-py $VERSION's tests against $url"
    (cd "$SRC" && timeout 1800 "$DIR/venv/bin/python" -m pytest "$@" --redis-url="$url" \
        --redis-cluster-nodes="$nodes" -q -p no:cacheprovider -o addopts="" -o timeout_func_only=true \
        --junitxml="$DIR/$name.xml" >"$DIR/$name.log" 2>&1) || true
    tail -n 1 "$DIR/$name.log" >&2
}

# compare DIRECT PROXY: both counts, then every test that passed directly and not through the proxy.
compare() {
    python3 - "$DIR/$1.xml" "$DIR/$2.xml" <<'EOF'
import sys
import xml.etree.ElementTree as ET

def outcomes(path):
    out = {}
    for case in ET.parse(path).iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        kind = "passed"
        for child in case:
            if child.tag in ("failure", "error"):
                kind = "failed"
            elif child.tag == "skipped":
                kind = "skipped"
        detail = ""
        for child in case:
            if child.tag in ("failure", "error"):
                detail = (child.get("message") or "").splitlines()[0][:160] if child.get("message") else ""
        out[name] = (kind, detail)
    return out

direct, proxy = outcomes(sys.argv[1]), outcomes(sys.argv[2])
for label, res in (("direct", direct), ("through haproxy-rs", proxy)):
    counts = {k: sum(1 for v in res.values() if v[0] == k) for k in ("passed", "failed", "skipped")}
    print(f"  {label:20} {counts['passed']:5} passed {counts['failed']:4} failed {counts['skipped']:4} skipped")
only = sorted(n for n, (k, _) in proxy.items() if k == "failed" and direct.get(n, ("",))[0] == "passed")
print(f"  failing only through the proxy: {len(only)}")
for n in only:
    print(f"    {n}: {proxy[n][1]}")
EOF
}

prepare_suite
build_proxy
command -v redis-cli >/dev/null || die "redis-cli is missing: scripts/lab.sh install"

if [ "$MODE" = sentinel ] || [ "$MODE" = all ]; then
    bash scripts/lab.sh up
    start_proxy config/haproxy-rs.toml sentinel
    # shellcheck disable=SC2086 # FILES is a list of paths
    run_suite sentinel-direct redis://127.0.0.1:6391/0 1 $FILES
    bash scripts/lab.sh up # a test may have left a replica behind; the lab puts itself back together
    # shellcheck disable=SC2086
    run_suite sentinel-proxy "redis://127.0.0.1:$PROXY_PORT/0" 1 $FILES
    stop_proxy
    echo "Sentinel mode (redis-py $VERSION):"
    compare sentinel-direct sentinel-proxy
fi

if [ "$MODE" = cluster ] || [ "$MODE" = all ]; then
    bash scripts/lab.sh cluster up
    # shellcheck disable=SC2086
    run_suite cluster-direct redis://127.0.0.1:6401/0 6 $FILES $CLUSTER_FILES $CLUSTER_DESELECT
    # a fresh cluster for the second run: settings a test changed do not carry over
    bash scripts/lab.sh cluster down
    bash scripts/lab.sh cluster up
    start_proxy config/cluster.toml cluster
    # shellcheck disable=SC2086
    run_suite cluster-proxy "redis://127.0.0.1:$PROXY_PORT/0" 1 $FILES $CLUSTER_FILES $CLUSTER_DESELECT
    stop_proxy
    echo "Cluster mode (redis-py $VERSION):"
    compare cluster-direct cluster-proxy
fi
log "logs and JUnit results in $DIR"
