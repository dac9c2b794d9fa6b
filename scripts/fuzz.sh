#!/usr/bin/env bash
# Fuzzes the client request parser with cargo-fuzz (libFuzzer) for a bounded time. Not part of CI.
#
#   scripts/fuzz.sh            # 60 s
#   scripts/fuzz.sh 600        # ten minutes
#   scripts/fuzz.sh check      # only check that the target compiles (stable toolchain is enough)
#
# Needs a nightly toolchain (installed with rustup when missing) and cargo-fuzz (installed when
# missing). The corpus grows in fuzz/corpus/request_parser (ignored by git); fuzz/seeds holds the
# starting inputs; a crash is saved in fuzz/artifacts/request_parser and makes the script fail.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TARGET=request_parser

die() { printf 'fuzz.sh: error: %s\n' "$*" >&2; exit 1; }

if [ "${1:-}" = "check" ]; then
    exec cargo check --manifest-path fuzz/Cargo.toml --bins
fi

SECS=${1:-60}
case "$SECS" in
    '' | *[!0-9]*) die "the duration must be a number of seconds, got '$SECS'" ;;
esac

command -v rustup >/dev/null 2>&1 || die "rustup is needed to install the nightly toolchain"
if ! rustup run nightly rustc --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked
fi

mkdir -p "fuzz/corpus/$TARGET"
# -max_total_time bounds the run; the dictionary holds RESP tokens; the seeds are read, never written.
cargo +nightly fuzz run "$TARGET" "fuzz/corpus/$TARGET" "fuzz/seeds/$TARGET" -- \
    -max_total_time="$SECS" -dict=fuzz/resp.dict -max_len=4096
