#!/bin/bash
# The cost of a reader that never reads `GET /v1/events`: bursts of 1,000 operations
# (sandboxes on two networks with two published ports, created and removed) without a
# reader, with a stalled one, and without again, in one daemon; the ratio with/without
# (goal <= 1.05) of each run and their median.
#   sudo bench/events.sh [RUNS]
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
./scripts/install-deps.sh >/dev/null
ratios=()
for i in $(seq "$RUNS"); do
  line=$(NETD_BENCH_EVENTS=1 cargo test -q -p integration --test events -- --exact a_reader_that_never_reads_does_not_hold_the_daemon --nocapture 2>/dev/null | grep '^events: ')
  echo "run $i: $line"
  ratios+=("$(sed -n 's/.*ratio \([0-9.]*\).*/\1/p' <<<"$line")")
done
printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END {printf "median ratio (with a stalled reader / without) over %d runs: %s (goal <= 1.05)\n", NR, a[int((NR+1)/2)]}'
