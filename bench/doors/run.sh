#!/usr/bin/env bash
# The stage door's benchmark (issue 16): one real `improv serve` (the release binary) with four
# doors — a schedule (every minute), an `every = "1s"` door whose probe never changes, a signed
# webhook (a delivery every 30 s) and a Telegram chat door against a local fake Bot API feeding
# one message per second from 20 allowed senders — and an instant local mock of the OpenAI model.
# Prints a table: RSS growth after warm-up (sampled from /proc every 10 s; warm-up = the first
# 10% of the run; goal < 10%), message-in to reply overhead p50/p99 (getUpdates answer written
# to sendMessage arriving, minus the mock's own time), and model requests for the idle probed
# door (goal 0). Only python3's standard library is needed besides the binary.
#
#   bench/doors/run.sh                  # one hour (the issue's run)
#   bench/doors/run.sh --minutes 20     # shorter
#   bench/doors/run.sh --improv PATH    # another binary (default target/release/improv)
#   bench/doors/run.sh --compact-at 1000  # each thread compacted at 1,000 tokens ([context]
#                                       # compact_at); the mock names no context window, so by
#                                       # default a thread's history grows through the run
#
# Builds target/release/improv first when it is missing (`cargo build --release -p improv`).
# DOORBENCH_KEEP=DIR runs the stage in DIR (kept, with serve.log); DOORBENCH_DUMP=FILE appends
# every model request to FILE; both are for finding out why a run answered nothing.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ " $* " != *" --improv "* && ! -x target/release/improv ]]; then
    CARGO_INCREMENTAL=0 cargo build --release -p improv
fi
exec python3 bench/doors/bench.py "$@"
