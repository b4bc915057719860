#!/bin/bash
# macvlan vs bridge attach/detach latency in one daemon and one run, and reconcile time
# after kill -9 with many endpoints of each driver.
#   sudo bench/macvlan.sh [N] [--endpoints E]
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cargo build --release -q -p netd --bins -p netd-bench
exec ./target/release/netd-bench-macvlan "$@"
