#!/bin/bash
# `docker run --rm --network X netd/busybox true` for X = none, Docker's default bridge
# (docker0), a user-defined Docker bridge network, a netd network (-d netd --ipam-driver
# netd), and a network of the smallest working remote driver + IPAM we have
# (../shared/engines/libnetwork-recorder.py: a veth on a bridge, no firewall, no store):
# N runs each, interleaved, in one run against one dockerd. Prints p50/p99, each
# network's overhead over `none`, netd's overhead against Docker's bridges, and what
# dockerd itself costs for any remote driver (the minimal plugin's overhead minus its
# handler time); then `docker network create`/`rm` times for both drivers.
#   sudo bench/docker.sh [N]          (default 50)
# dockerd runs in its own netns and state dir (../shared/engines/dockerd.sh); netd (the
# release build) runs inside that netns serving the plugin socket. Both go at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-50}
ENGINES=${NETD_SHARED_ENGINES:-$(pwd)/../shared/engines}
export NETD_ENGINE_DIR=${TMPDIR:-/tmp}/nddk-bench-$$
export NETD_ENGINE_NETNS=nddk-bench-$$
[ "$(id -u)" -eq 0 ] || { echo "bench/docker.sh needs root" >&2; exit 1; }
[ -x /usr/bin/docker ] || { echo "docker is not installed: run $ENGINES/install.sh" >&2; exit 1; }
cargo build --release -q -p netd --bins
D="/usr/bin/docker -H unix://$NETD_ENGINE_DIR/dockerd/docker.sock"
NETD_PID=
PROBE_PID=
cleanup() {
  set +e
  ids=$($D ps -aq 2>/dev/null); [ -n "$ids" ] && $D rm -f $ids >/dev/null 2>&1
  $D network rm bench-netd bench-dbr bench-min >/dev/null 2>&1
  [ -n "$NETD_PID" ] && kill "$NETD_PID" 2>/dev/null && wait "$NETD_PID" 2>/dev/null
  [ -n "$PROBE_PID" ] && kill "$PROBE_PID" 2>/dev/null && wait "$PROBE_PID" 2>/dev/null
  "$ENGINES/dockerd.sh" stop >/dev/null 2>&1
  rm -rf "$NETD_ENGINE_DIR"
}
trap cleanup EXIT
"$ENGINES/dockerd.sh" start >/dev/null
eval "$("$ENGINES/dockerd.sh" env)"
mkdir -p "$NETD_ENGINE_DIR/netd"
NETD_LOG=info,netd::api::docker_plugin=debug nsenter --net="/run/netns/$NETD_ENGINE_NETNS" ./target/release/netd daemon \
  --state-dir "$NETD_ENGINE_DIR/netd/state" --socket "$NETD_ENGINE_DIR/netd/netd.sock" \
  --netns-dir "$NETD_ENGINE_DIR/netd/netns" --etc-netns-dir "$NETD_ENGINE_DIR/netd/etc" \
  --docker-plugin-dir "$NETD_DOCKER_PLUGIN_DIR" 2>"$NETD_ENGINE_DIR/netd.log" &
NETD_PID=$!
# The minimal peer: dockerd's cost for any remote driver shows in its overhead.
nsenter --net="/run/netns/$NETD_ENGINE_NETNS" python3 "$ENGINES/libnetwork-recorder.py" \
  "$NETD_DOCKER_PLUGIN_DIR/minimal.sock" both "$NETD_ENGINE_DIR/minimal.trace" >/dev/null 2>&1 &
PROBE_PID=$!
for _ in $(seq 100); do [ -S "$NETD_DOCKER_PLUGIN_DIR/netd.sock" ] && [ -S "$NETD_DOCKER_PLUGIN_DIR/minimal.sock" ] && break; sleep 0.05; done

$D network create -d netd --ipam-driver netd --subnet 10.250.0.0/24 bench-netd >/dev/null
$D network create -d bridge --subnet 10.251.0.0/24 bench-dbr >/dev/null
$D network create -d minimal --ipam-driver minimal --subnet 10.252.0.0/24 bench-min >/dev/null
NETS="none bridge bench-dbr bench-netd bench-min"
ms() { echo $(( ($(date +%s%N) - $1) / 1000 )); }   # microseconds since $1
run_once() { local t0; t0=$(date +%s%N); $D run --rm --network "$1" netd/busybox true >/dev/null; ms "$t0"; }
for n in $NETS; do for _ in 1 2 3; do run_once "$n" >/dev/null; done; done   # warm-up
declare -A T
for i in $(seq "$N"); do
  for n in $NETS; do T[$n]+="$(run_once "$n") "; done
done

# pct "values" P -> value at the P-th percentile (nearest rank), in ms with 1 decimal
pct() { tr ' ' '\n' <<<"$1" | grep . | sort -n | awk -v p="$2" '{a[NR]=$1} END {i=int((p*NR+99)/100); if(i<1)i=1; printf "%.1f", a[i]/1000}'; }
echo "docker run --rm --network X netd/busybox true   ($N runs each, interleaved; dockerd $($D version -f '{{.Server.Version}}'))"
printf "%-28s %9s %9s %14s\n" network p50_ms p99_ms overhead_p50
base=$(pct "${T[none]}" 50)
declare -A P50
for n in $NETS; do
  p50=$(pct "${T[$n]}" 50); p99=$(pct "${T[$n]}" 99); P50[$n]=$p50
  label=$n; case $n in bridge) label="docker default bridge";; bench-dbr) label="docker user bridge";; bench-netd) label="netd (-d netd)";; bench-min) label="minimal remote plugin";; esac
  printf "%-28s %9s %9s %14s\n" "$label" "$p50" "$p99" "$(awk -v a="$p50" -v b="$base" 'BEGIN{printf "%+.1f ms", a-b}')"
done
awk -v n="${P50[bench-netd]}" -v d="${P50[bench-dbr]}" -v d0="${P50[bridge]}" -v b="$base" 'BEGIN {
  on = n - b; od = d - b; od0 = d0 - b
  printf "netd overhead %.1f ms vs docker user bridge %.1f ms (ratio %.2f) and default bridge %.1f ms\n", on, od, (od > 0 ? on / od : 0), od0
  printf "goal netd overhead <= docker bridge overhead: user-defined bridge %s, default bridge %s;  goal netd overhead <= 5 ms p50: %s\n", (on <= od ? "met" : "NOT met"), (on <= od0 ? "met" : "NOT met"), (on <= 5 ? "met" : "NOT met")
}'

# Handler time per `docker run` (network/pool/activate calls left out): netd's from its
# debug log, the minimal plugin's from its trace.
NETD_H=$(awk -v runs="$((N + 3))" '/docker plugin call/ {
    m = ""; us = 0
    for (i = 1; i <= NF; i++) { if ($i ~ /^uri=/) m = substr($i, 6); if ($i ~ /^us=/) us = substr($i, 4) + 0 }
    if (m ~ /(Network|Pool|Activate|Capabilities|AddressSpaces)$/) next
    tot += us; n[m]++; s[m] += us
  } END {
    printf "%.2f ", tot / runs / 1000
    sep = ""; for (k in n) { printf "%s%s %.2f", sep, k, s[k] / n[k] / 1000; sep = ", " }
  }' "$NETD_ENGINE_DIR/netd.log")
MIN_H=$(awk -v runs="$((N + 3))" '/ POST / {
    m = $4; ms = $5; gsub(/[()]/, "", ms)
    if (m ~ /(Network|Pool|Activate|Capabilities|AddressSpaces)$/) next
    tot += ms
  } END { printf "%.2f", tot / runs }' "$NETD_ENGINE_DIR/minimal.trace")
echo "netd plugin handlers per docker run: ${NETD_H%% *} ms in total (${NETD_H#* } ms avg)"
echo "minimal plugin handlers per docker run: $MIN_H ms in total"
awk -v n="${P50[bench-netd]}" -v m="${P50[bench-min]}" -v b="$base" -v nh="${NETD_H%% *}" -v mh="$MIN_H" 'BEGIN {
  dk = (m - b) - mh
  printf "dockerd own work for a remote-driver network: %.1f ms p50 (minimal plugin overhead %.1f - its handlers %.1f)\n", dk, m - b, mh
  printf "netd overhead beyond dockerd own work: %.1f ms p50 (netd handlers %.1f ms)\n", (n - b) - dk, nh
}'

M=20
declare -A C R
for i in $(seq "$M"); do
  for drv in netd bridge; do
    extra=""; [ "$drv" = netd ] && extra="--ipam-driver netd"
    t0=$(date +%s%N); $D network create -d "$drv" $extra "bench-c-$drv-$i" >/dev/null; C[$drv]+="$(ms "$t0") "
    t0=$(date +%s%N); $D network rm "bench-c-$drv-$i" >/dev/null; R[$drv]+="$(ms "$t0") "
  done
done
echo "docker network create / rm   ($M each, interleaved)"
printf "%-10s %12s %12s %12s %12s\n" driver create_p50 create_p99 rm_p50 rm_p99
for drv in bridge netd; do
  printf "%-10s %12s %12s %12s %12s\n" "$drv" "$(pct "${C[$drv]}" 50)" "$(pct "${C[$drv]}" 99)" "$(pct "${R[$drv]}" 50)" "$(pct "${R[$drv]}" 99)"
done
