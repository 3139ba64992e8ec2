#!/usr/bin/env bash
# The store benchmark: throughput of `improv worker` with 1, 2 and 4 workers (PostgreSQL in a
# throwaway server, and SQLite) against an instant model, and the time from a worker's death to
# its performances moving again on another worker with the default 10 s lease (median, p99), and
# the per-turn cost of a performance with no store, on SQLite and on PostgreSQL.
# Runs the real binary (debug build, as the tests do); prints a table. Needs PostgreSQL's
# binaries (apt-get install postgresql).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -q -p improv --test all -- --ignored --nocapture --test-threads 1 worker::bench_store
