#!/usr/bin/env bash
# Runs the kernel benchmark on two improv binaries in turn, ROUNDS times, so that both see the
# same load on a busy machine (one run of each says little: quote the medians). One line per run:
# the bash rows (sandbox on and off), the read row, the peak RSS and the bash-turn ratio.
#
#   bench/compare.sh BEFORE AFTER [ROUNDS] [RUNS]
#
# Build the two binaries first (bench/run.sh --no-default-features builds target/lean/improv;
# copy it aside before building the other). Needs target/release/improv-bench (bench/run.sh
# builds it).
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ $# -lt 2 ]]; then
    echo "usage: bench/compare.sh BEFORE AFTER [ROUNDS] [RUNS]" >&2
    exit 2
fi
before=$1
after=$2
rounds=${3:-5}
runs=${4:-8}
field() { grep "^| $1" <<<"$2" | cut -d'|' -f3 | tr -d ' '; }
for round in $(seq 1 "$rounds"); do
    for binary in "$before" "$after"; do
        out=$(target/release/improv-bench "$binary" --runs "$runs" 2>&1)
        ratio=$(grep 'bare `bash -c`' <<<"$out" | cut -d'|' -f3 | sed 's/^ *//; s/ *$//')
        echo "$round $binary on=$(field 'bash, sandbox on' "$out") off=$(field 'bash, sandbox off' "$out") read=$(field read "$out") rss=$(field 'peak RSS' "$out") ratio=$ratio"
    done
done
