#!/bin/bash
# Attach/detach latency of netd's API next to the reference CNI bridge plugin, measured
# in one run, plus RSS with 1,000 endpoints and reconcile time after kill -9.
#   sudo bench/attach.sh [N]
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-200}
./scripts/install-deps.sh >/dev/null
cargo build --release -q -p netd --bins -p netd-bench
exec ./target/release/netd-bench-attach "$N" --ref-script "$(pwd)/../shared/engines/cni-ref-bench.sh"
