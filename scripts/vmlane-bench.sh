#!/bin/bash
# Runs a bench script of bench/ that drives a scripts/lab.sh cluster inside the VM lane
# (../shared/vmlane: Debian's stock kernel under QEMU), for what this machine's kernel
# lacks: IPsec ESP and kernel WireGuard (bench/overlay-encrypted.sh). netd and netctl are
# built in release and shipped with scripts/lab.sh and the bench script; the bench runs
# in the guest with NETD_BIN pointing at them.
#   sudo scripts/vmlane-bench.sh overlay-encrypted [ARGS...]
# QEMU emulates the CPU (no KVM): absolute figures mean nothing, ratios between rows of
# one run (one boot) are what such a run is for.
set -euo pipefail
cd "$(dirname "$0")/.."
LANE=${NETD_SHARED_VMLANE:-$(pwd)/../shared/vmlane}
bench=${1:?usage: scripts/vmlane-bench.sh BENCH [ARGS...] (a script bench/BENCH.sh)}
shift
[ -f "bench/$bench.sh" ] || { echo "vmlane-bench: no bench/$bench.sh" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "vmlane-bench: needs root" >&2; exit 1; }
[ -x "$LANE/run.sh" ] || { echo "vmlane-bench: no VM lane at $LANE" >&2; exit 1; }
"$LANE/build.sh" >/dev/null
share=$(mktemp -d)
trap 'rm -rf "$share"' EXIT
. scripts/vmlane-lib.sh
cargo build -q --release -p netd --bins
ship target/release/netd netd
ship target/release/netctl netctl
mkdir -p "$share/repo/scripts" "$share/repo/bench"
cp scripts/lab.sh "$share/repo/scripts/"
cp "bench/$bench.sh" "$share/repo/bench/"
{
  echo '#!/bin/bash'
  echo 'mkdir -p /tmp/bin /run && cp /share/netd /share/netctl /tmp/bin/ || exit 1'
  echo 'cp -r /share/repo /tmp/repo && cd /tmp/repo || exit 1'
} >"$share/run-bench.sh"
lane_modules "$share" run-bench.sh
printf 'NETD_BIN=/tmp/bin bash bench/%s.sh' "$bench" >>"$share/run-bench.sh"
printf ' %q' "$@" >>"$share/run-bench.sh"
echo >>"$share/run-bench.sh"
chmod +x "$share/run-bench.sh"
echo "vm lane: bench/$bench.sh $* in the guest"
"$LANE/run.sh" "$share" run-bench.sh --timeout "${NETD_VMLANE_TIMEOUT:-1800}" --mem 4096
