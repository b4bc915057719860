#!/bin/bash
# Programming service VIPs: netd's nftables batches against kube-proxy-style rules loaded
# with iptables-restore, full load and one backend change, at 1k/5k/10k services × 4
# backends, in scratch namespaces (docs/benchmarks.md, "Services"). Prints ratios.
#   sudo bench/services.sh [--sizes 1000,5000,10000] [--rounds 15]
#   sudo bench/services.sh datapath [--services 10,10000] [--secs 2] [--rounds 3]   # conn/s, latency
#     (ends with a published port from outside: nftables vs the eBPF routing mesh in tc)
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh >/dev/null
cargo build --release -q -p netd-bench --bin netd-bench-services
exec ./target/release/netd-bench-services "$@"
