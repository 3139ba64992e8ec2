#!/usr/bin/env bash
# Many performances waiting on a slow model in one `improv worker` on a PostgreSQL store (a
# throwaway server): the worker's peak RSS (goal at 10,000: 2 GB) and the latency of
# GET /healthz, /performances and the page from `improv serve` on the same store while they wait
# (goal: 100 ms). IMPROV_BENCH_WAITING=N changes the count (default 10000). Runs the real binary
# (debug build, as the tests do); prints a table. Needs PostgreSQL's binaries.
#
# Figures at 10,000 (debug build, 2 shared cores, 540 s ramp cap):
# | build               | reached model | worker threads | peak RSS | /performances p99 |
# | before issue-15 fix | 2,367         | ~1,700         | 914 MB   | 410 ms            |
# | threads + memory    | 2,852         | 3              | 520 MB   | 11.9 ms           |
# The ramp stops at ~2,850: 20,000 open files (ulimit -n) / ~7 descriptors per performance
# (the model's socket, the sandbox's pipes and temp dir); that is what bounds it now.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -q -p improv --test waiting -- --ignored --nocapture bench_waiting
