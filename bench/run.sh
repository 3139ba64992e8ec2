#!/usr/bin/env bash
# Builds improv as scripts/install.sh ships it (the `dist` profile) and runs the kernel benchmark;
# prints a table, then the peak RSS, the stripped binary size and the bash-turn ratio beside their
# goals.
#
#   bench/run.sh [--no-default-features] [--turns N] [--runs N]
#
# --no-default-features benchmarks the lean build: improv without the embedded model (no C++).
# Its binary is copied to target/lean/improv (the next default build relinks target/dist/).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ "${1:-}" == "--no-default-features" ]]; then
    shift
    cargo build --profile dist -q -p improv --no-default-features
    mkdir -p target/lean
    cp target/dist/improv target/lean/improv
    improv=target/lean/improv
else
    cargo build --profile dist -q -p improv
    improv=target/dist/improv
fi
cargo build --release -q -p improv-bench
exec target/release/improv-bench "$improv" "$@"
