#!/usr/bin/env bash
# Builds improv in release mode and runs the kernel benchmark; prints a table.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release -q -p improv -p improv-bench
exec target/release/improv-bench target/release/improv "$@"
