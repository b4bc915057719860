#!/bin/bash
# `docker run --rm --network X netd/busybox true` for X = none, Docker's default bridge
# (docker0), a user-defined Docker bridge network, and a netd network (-d netd
# --ipam-driver netd): N runs each, interleaved, in one run against one dockerd. Prints
# p50/p99, each network's overhead over `none`, and netd's overhead against Docker's
# bridge; then `docker network create`/`rm` times for both drivers.
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
cleanup() {
  set +e
  ids=$($D ps -aq 2>/dev/null); [ -n "$ids" ] && $D rm -f $ids >/dev/null 2>&1
  $D network rm bench-netd bench-dbr >/dev/null 2>&1
  [ -n "$NETD_PID" ] && kill "$NETD_PID" 2>/dev/null && wait "$NETD_PID" 2>/dev/null
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
for _ in $(seq 100); do [ -S "$NETD_DOCKER_PLUGIN_DIR/netd.sock" ] && break; sleep 0.05; done

$D network create -d netd --ipam-driver netd --subnet 10.250.0.0/24 bench-netd >/dev/null
$D network create -d bridge --subnet 10.251.0.0/24 bench-dbr >/dev/null
NETS="none bridge bench-dbr bench-netd"
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
  label=$n; case $n in bridge) label="docker default bridge";; bench-dbr) label="docker user bridge";; bench-netd) label="netd (-d netd)";; esac
  printf "%-28s %9s %9s %14s\n" "$label" "$p50" "$p99" "$(awk -v a="$p50" -v b="$base" 'BEGIN{printf "%+.1f ms", a-b}')"
done
awk -v n="${P50[bench-netd]}" -v d="${P50[bench-dbr]}" -v d0="${P50[bridge]}" -v b="$base" 'BEGIN {
  on = n - b; od = d - b; od0 = d0 - b
  printf "netd overhead %.1f ms vs docker user bridge %.1f ms (ratio %.2f) and default bridge %.1f ms\n", on, od, (od > 0 ? on / od : 0), od0
  printf "goal netd overhead <= docker bridge overhead: %s;  goal netd overhead <= 5 ms p50: %s\n", (on <= od ? "met" : "NOT met"), (on <= 5 ? "met" : "NOT met")
}'

# netd's own share: time spent in its plugin handlers per `docker run` (from its debug log).
awk -v runs="$((N + 3))" '/docker plugin call/ {
    m = ""; us = 0
    for (i = 1; i <= NF; i++) { if ($i ~ /^uri=/) m = substr($i, 6); if ($i ~ /^us=/) us = substr($i, 4) + 0 }
    if (m ~ /(Network|Pool|Activate)$/) next
    tot += us; n[m]++; s[m] += us
  } END {
    printf "netd plugin handlers per docker run: %.2f ms in total (", tot / runs / 1000
    sep = ""; for (k in n) { printf "%s%s %.2f", sep, k, s[k] / n[k] / 1000; sep = ", " }
    print " ms avg)"
  }' "$NETD_ENGINE_DIR/netd.log"

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
