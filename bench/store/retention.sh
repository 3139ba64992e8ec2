#!/usr/bin/env bash
# The door-table retention sweep (issue 16) on SQLite: 100,000 outbox rows (90% confirmed
# sent) and 100,000 firings of 100 doors, swept in batches of 500 as the daemon does every 10
# minutes; prints a table of calls and times per batch, first with nothing expired (the usual
# sweep), then with old rows going. Debug build, as the tests use.
#
# Figures (debug build, 2 shared cores, 2026-11-29): a sweep with nothing to delete 37 ms
# (outbox) and 34 ms (firings) over 100,000 rows; deleting, a batch of 500 takes 3.8 ms
# (outbox, median; max 30 ms) and 4.9 ms (firings, median; max 74 ms): 90,000 outbox rows in
# 181 calls, 0.76 s; 98,000 firings in 197 calls, 1.5 s. Deletes pick rows by rowid / key
# with LIMIT and no ORDER BY (each door's cut-off found on its (door, due) key), never
# `NOT IN` over the table.
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -q -p improv-store --features testing --test retention_bench -- --ignored \
    --nocapture bench_retention_sweep
