#!/bin/bash
# Overlay networks (issue 18), one run on a scripts/lab.sh cluster of N hosts (default 3):
# - convergence: K sandbox creates on h1, each timed until every other host's sandbox
#   pings it, all at once from one prober (p50/p99; the agent looks for new local sandboxes every 100 ms);
# - etcd writes per sandbox create (etcd's revision before and after K creates);
# - TCP throughput (iperf3, 5 s) sandbox↔sandbox across hosts over the overlay, next to
#   the same two hosts over the underlay, as a ratio.
#   sudo bench/overlay.sh [N] [K]
# LAB=NAME runs it in a lab of that name (scripts/lab.sh; default ndlab).
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-3}
K=${2:-20}
BIN=${NETD_BIN:-$PWD/target/debug}
export NETD_BIN=$BIN
[ -x "$BIN/netd" ] || cargo build -q -p netd --bins
cargo build --release -q -p netd-bench --bin netd-bench-probe
PROBE=$PWD/target/release/netd-bench-probe
L=scripts/lab.sh
LAB=${LAB:-ndlab}
export LAB
trap '$L down >/dev/null; rm -rf "${tmp:-}"' EXIT
$L up "$N" >/dev/null
rev() { nsenter --net=/run/netns/$LAB-ul etcdctl --endpoints http://10.251.0.254:2379 endpoint status -w json |
  jq '.[0].Status.header.revision'; }
ms() { date +%s%3N; }
# Every node with a sandbox on the network holds it and claims a /26 of it
# (docs/overlay.md); here all do, so the subnet needs a block per host: a /16 has 1,024.
$L ctl 1 network create -d overlay --subnet 10.70.0.0/16 bench >/dev/null
for i in $(seq 2 "$N"); do
  until $L ctl "$i" network ls -q | grep -qx bench; do sleep 0.05; done
  $L ctl "$i" sandbox create --network bench "w$i" >/dev/null
done
sleep 1
# The lab's hosts share one kernel neighbour table (scripts/lab.sh raises its limits); an
# overflow during the run would time the kernel refusing entries, so it is counted.
overflows() { dmesg 2>/dev/null | grep -c 'neighbor table overflow' || true; }
o0=$(overflows)
r0=$(rev)
times=()
slowest=()
tmp=$(mktemp -d)
nss=()
for i in $(seq 2 "$N"); do nss+=("/run/$LAB/h$i/netns/w$i"); done
for k in $(seq "$K"); do
  t0=$(ms)
  $L ctl 1 sandbox create --network bench "c$k" >/dev/null
  ip=$($L ctl 1 sandbox inspect "c$k" | jq -r '.[0].endpoints[0].ipv4' | cut -d/ -f1)
  # Every other host pings at once (one prober process, a thread per host, an echo
  # request every 20 ms until answered); the create has converged when the last has.
  t1=$(ms)
  $PROBE "$ip" 30000 "${nss[@]}" >"$tmp/out" || { echo "not reachable from every host:"; grep none "$tmp/out"; exit 1; }
  last=$(sort -n "$tmp/out" | tail -1)
  times+=($((${last%% *} + t1 - t0)))
  slowest+=("$(basename "$(dirname "$(dirname "${last##* }")")")")
done
echo "slowest host per create: ${slowest[*]}"
o1=$(overflows)
[ "$o1" = "$o0" ] || echo "WARNING: the kernel's neighbour table overflowed $((o1 - o0)) times during the run: these times include it"
sleep 1
r1=$(rev)
sorted=$(printf '%s\n' "${times[@]}" | sort -n)
p50=$(echo "$sorted" | awk -v n="$K" 'NR==int((n+1)/2)')
p99=$(echo "$sorted" | awk -v n="$K" 'NR==int(n*0.99+0.999)')
echo "convergence, create on h1 -> pinged from all $((N - 1)) others ($K creates): p50 ${p50} ms, p99 ${p99} ms"
echo "etcd writes per sandbox create: $(awk -v a="$r0" -v b="$r1" -v k="$K" 'BEGIN{printf "%.2f", (b-a)/k}') (revision $r0 -> $r1)"
if command -v iperf3 >/dev/null; then
  ip2=$($L ctl 2 sandbox inspect w2 | jq -r '.[0].endpoints[0].ipv4' | cut -d/ -f1)
  nsenter --net=/run/$LAB/h2/netns/w2 iperf3 -s -1 -D >/dev/null
  sleep 0.3
  ov=$(nsenter --net=/run/$LAB/h1/netns/c1 iperf3 -c "$ip2" -t 5 -J | jq '.end.sum_received.bits_per_second')
  $L sh 2 iperf3 -s -1 -D >/dev/null
  sleep 0.3
  ul=$($L sh 1 iperf3 -c 10.251.0.2 -t 5 -J | jq '.end.sum_received.bits_per_second')
  awk -v o="$ov" -v u="$ul" 'BEGIN{printf "TCP h1->h2: overlay %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.3f\n", o/1e9, u/1e9, o/u}'
fi
