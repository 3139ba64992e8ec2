#!/usr/bin/env bash
# Many performances waiting on a slow model in one `improv worker` on a PostgreSQL store (a
# throwaway server): the worker's peak RSS (goal at 10,000: 2 GB) and the latency of
# GET /healthz, /performances and the page from `improv serve` on the same store while they wait
# (goal: 100 ms). IMPROV_BENCH_WAITING=N changes the count (default 10000). Runs the real binary
# (debug build, as the tests do); prints a table. Needs PostgreSQL's binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -q -p improv --test waiting -- --ignored --nocapture bench_waiting
