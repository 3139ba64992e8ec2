#!/usr/bin/env bash
# The routines benchmark: 10 task families x 10 parameter variants with deterministic file checks,
# a scripted competent lead behind the OpenAI mock, performed cold (no routines) and warm
# ([routines] auto_approve = true); prints the table (zero-model share, requests, request bytes,
# tokens as the mock reports them, wall time, success, routines kept per family).
# ROUTINES_BENCH_LATENCY_MS=300 gives each model response a hosted model's latency (default 0).
set -euo pipefail
cd "$(dirname "$0")/../.."
exec cargo run -q -p improv-perform --example routines-bench
