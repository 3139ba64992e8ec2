#!/usr/bin/env bash
# Builds the ledger's import benchmark in release mode and runs it against DuckDB on the same
# 100 MB irregular JSON-lines file (generated once into target/); prints a table.
# Needs `pip install duckdb`. Extra arguments go to compare.py (e.g. --mb 20, --file PATH, --runs 5).
set -euo pipefail
cd "$(dirname "$0")/../.."
cargo build --release -q -p improv-ledger --example ledger-import
exec python3 bench/ledger/compare.py target/release/examples/ledger-import "$@"
