#!/usr/bin/env bash
# The door-table retention sweep (issue 16) on SQLite, then on PostgreSQL: 100,000 outbox rows (90% confirmed
# sent), 100,000 firings of 100 doors and 20,000 door-made performances of 100 doors (5 events
# each, blobs shared), swept in batches as the daemon does every 10 minutes (500 rows, 50
# performances); prints a table of calls and times per batch, first with nothing expired (the
# usual sweep, 5 calls each, median), then with old rows going. Debug build, as the tests use.
#
# Figures (debug build, 2 shared cores, 2026-11-30): a sweep with nothing to delete reads no
# row on the outbox since migration 7's index on confirmed rows: 0.03 ms (median of 5; 16.8 ms
# with the index dropped, 37 ms on 2026-11-29 before it), firings 23 ms, door performances
# 0.18 ms. Deleting: 90,000 outbox rows in 181 calls, 0.17 s (median 0.81 ms); 98,000 firings
# in 197 calls, 1.3 s (median 2.9 ms, max 42 ms); 18,000 performances with their 90,000
# events in 361 calls, 1.3 s (median 2.3 ms, max 17 ms). Deletes pick rows by rowid / key with
# LIMIT and no ORDER BY (each door's cut-off found on its (door, due) or (origin, created_at)
# key), never `NOT IN` over the table.
#
# The same on PostgreSQL (TempPostgres on a Unix socket, same machine, 2026-11-30): nothing to
# delete: outbox 2.6 ms median (5.5 ms with the index dropped), firings 8.2 ms, performances
# 0.8 ms; deleting: 90,000 outbox rows 0.31 s (median 1.5 ms), 98,000 firings 1.7 s (median
# 7.7 ms, max 20 ms), 18,000 performances with their events 2.4 s (median 5.9 ms, max 20 ms).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo test -q -p improv-store --features testing --test retention_bench -- --ignored \
    --nocapture --test-threads 1 bench_retention_sweep
