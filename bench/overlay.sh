#!/bin/bash
# Overlay networks (issue 18), one run on a scripts/lab.sh cluster of N hosts (default 3):
# - convergence: K sandbox creates on h1, each timed until every other host's sandbox
#   pings it, all at once from one prober (p50/p99; the agent looks for new local sandboxes every 100 ms);
# - etcd writes per sandbox create (etcd's revision before and after K creates), and per
#   node per idle minute (IDLE=60 seconds with nothing changing);
# - TCP throughput (iperf3, 5 s) sandbox↔sandbox across hosts over the overlay, next to
#   the same two hosts over the underlay, as a ratio; then the floor any VXLAN overlay has
#   here: the kernel's VXLAN made by hand (no netd) on the same hosts, and on two bare
#   namespaces with no netfilter, each as a ratio to its own underlay.
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
# Settled: every host reaches the last of them (each agent pass takes all the store
# holds, so a host that has wN has the others too). Otherwise the first timed create
# would also wait for hosts still learning each other's sandboxes.
if [ "$N" -gt 2 ]; then
  ipn=$($L ctl "$N" sandbox inspect "w$N" | jq -r '.[0].endpoints[0].ipv4' | cut -d/ -f1)
  others=()
  for i in $(seq 2 $((N - 1))); do others+=("/run/$LAB/h$i/netns/w$i"); done
  "$PROBE" "$ipn" 30000 "${others[@]}" >/dev/null || { echo "w$N not reachable from every host"; exit 1; }
fi
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
echo "per create (ms): ${times[*]}"
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
# Idle: nothing changes for IDLE seconds (default 60); every write would bump the
# revision (lease keep-alives do not: they are not writes).
IDLE=${IDLE:-60}
r2=$(rev)
sleep "$IDLE"
r3=$(rev)
echo "etcd writes per node per idle minute: $(awk -v a="$r2" -v b="$r3" -v n="$N" -v s="$IDLE" 'BEGIN{printf "%.2f", (b-a)/n/(s/60)}') (revision $r2 -> $r3 in $IDLE s, $N nodes)"
# The floor of any VXLAN overlay here: the kernel's own VXLAN, made by hand with nothing
# of netd's, between the same two hosts (bridge + VXLAN port + veth into a namespace,
# static FDB and neighbour entries, as netd makes them), and between two fresh namespaces
# joined by one veth with no netfilter rules at all, each next to its own underlay.
FLOOR_NS=()
FLOOR_LINKS=()
floor_down() {
  local n
  for n in "${FLOOR_NS[@]}"; do ip netns del "$n" 2>/dev/null || true; done
  # Names for the sandboxes' namespaces: only the names go (never `ip netns del`, which
  # would unmount the sandbox's own namespace).
  for n in "${FLOOR_LINKS[@]}"; do rm -f "/run/netns/$n"; done
  for i in 1 2; do
    ip -n "$LAB-h$i" link del ndflvx 2>/dev/null || true
    ip -n "$LAB-h$i" link del ndflbr 2>/dev/null || true
  done
}
trap 'floor_down; $L down >/dev/null; rm -rf "${tmp:-}"' EXIT
# floor_vxlan HOST1 HOST2 ADDR1 ADDR2 INNER: a sandbox-like namespace behind a VXLAN on
# each host namespace; prints the two inner namespaces.
floor_vxlan() {
  local h a i x y m1 m2
  for i in 1 2; do
    h=$1; a=$3; [ "$i" = 2 ] && { h=$2; a=$4; }
    y="$h-fl"
    ip netns add "$y"; FLOOR_NS+=("$y")
    ip -n "$h" link add ndflvx type vxlan id 4242 local "$a" dstport 4790 nolearning
    ip -n "$h" link add name ndflbr type bridge
    ip -n "$h" link set ndflvx master ndflbr mtu 1450
    ip -n "$h" link add ndflv type veth peer name eth0 netns "$y"
    ip -n "$h" link set ndflv master ndflbr mtu 1450
    for x in ndflvx ndflbr ndflv; do ip -n "$h" link set "$x" up; done
    ip -n "$y" link set lo up
    ip -n "$y" link set eth0 mtu 1450
    ip -n "$y" addr add "$5.$i/24" dev eth0
    ip -n "$y" link set eth0 up
  done
  m1=$(ip -n "$1-fl" -j link show eth0 | jq -r '.[0].address')
  m2=$(ip -n "$2-fl" -j link show eth0 | jq -r '.[0].address')
  bridge -n "$1" fdb append "$m2" dev ndflvx dst "$4" self permanent
  bridge -n "$2" fdb append "$m1" dev ndflvx dst "$3" self permanent
  ip -n "$1-fl" neigh add "$5.2" lladdr "$m2" dev eth0 nud permanent
  ip -n "$2-fl" neigh add "$5.1" lladdr "$m1" dev eth0 nud permanent
}
# tput NETNS_SERVER NETNS_CLIENT ADDR: bit/s of a 5 s iperf3 run.
tput() {
  ip netns exec "$1" iperf3 -s -1 -D >/dev/null
  sleep 0.3
  ip netns exec "$2" iperf3 -c "$3" -t 5 -J | jq '.end.sum_received.bits_per_second'
}
if command -v iperf3 >/dev/null; then
  ip2=$($L ctl 2 sandbox inspect w2 | jq -r '.[0].endpoints[0].ipv4' | cut -d/ -f1)
  ln -sf "/run/$LAB/h2/netns/w2" "/run/netns/$LAB-w2"
  ln -sf "/run/$LAB/h1/netns/c1" "/run/netns/$LAB-c1"
  FLOOR_LINKS+=("$LAB-w2" "$LAB-c1")
  ov=$(tput "$LAB-w2" "$LAB-c1" "$ip2")
  ul=$(tput "$LAB-h2" "$LAB-h1" 10.251.0.2)
  awk -v o="$ov" -v u="$ul" 'BEGIN{printf "TCP h1->h2: overlay %.2f Gbit/s, underlay %.2f Gbit/s, ratio %.3f\n", o/1e9, u/1e9, o/u}'
  floor_vxlan "$LAB-h1" "$LAB-h2" 10.251.0.1 10.251.0.2 10.250.9
  kv=$(tput "$LAB-h2-fl" "$LAB-h1-fl" 10.250.9.2)
  awk -v k="$kv" -v u="$ul" -v o="$ov" 'BEGIN{printf "TCP h1->h2: kernel VXLAN by hand (no netd) %.2f Gbit/s, ratio to the underlay %.3f; netd overlay / kernel VXLAN %.3f\n", k/1e9, k/u, o/k}'
  # Two fresh namespaces, one veth between them, no rules: VXLAN's cost alone.
  for n in ndflx1 ndflx2; do ip netns add "$n"; FLOOR_NS+=("$n"); ip -n "$n" link set lo up; done
  ip -n ndflx1 link add eth0 type veth peer name eth0 netns ndflx2
  for i in 1 2; do ip -n "ndflx$i" addr add "10.249.0.$i/24" dev eth0; ip -n "ndflx$i" link set eth0 up; done
  floor_vxlan ndflx1 ndflx2 10.249.0.1 10.249.0.2 10.248.0
  pk=$(tput ndflx2-fl ndflx1-fl 10.248.0.2)
  pu=$(tput ndflx2 ndflx1 10.249.0.2)
  awk -v k="$pk" -v u="$pu" 'BEGIN{printf "TCP, bare namespaces (one veth, no netfilter): kernel VXLAN %.2f Gbit/s, veth %.2f Gbit/s, ratio %.3f\n", k/1e9, u/1e9, k/u}'
fi
