#!/bin/bash
# Userspace WireGuard throughput: netd's device (`netd wireguard`, kernel::wg_user) next
# to boringtun-cli (Cloudflare's userspace WireGuard, configured with wg(8)) doing the
# same job, measured in the same run. Two namespaces wgh-bench-a/b on a veth; each
# device pair is a tunnel over it (netd: 10.9.0.0/24, boringtun-cli: 10.8.0.0/24); RUNS
# (default 3) interleaved iperf3 TCP runs of SECS (default 10) seconds through each.
# Prints Gbit/s per run, the means, and the ratio netd/boringtun-cli.
#   sudo bench/wireguard.sh [RUNS] [SECS]
# Needs iperf3 and wg (scripts/install-deps.sh); builds netd in release mode (or uses
# NETD_BIN=DIR) and installs boringtun-cli into .tools/ (bench/install-boringtun-cli.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${1:-3}
SECS=${2:-10}
if [ -z "${NETD_BIN:-}" ]; then
  cargo build -q --release -p netd --bin netd
  NETD_BIN=${CARGO_TARGET_DIR:-$PWD/target}/release
fi
NETD=$NETD_BIN/netd
BT=$(bench/install-boringtun-cli.sh)
A=wgh-bench-a
B=wgh-bench-b
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  ip netns del $A 2>/dev/null || true
  ip netns del $B 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
cleanup_ns() { ip netns del $A 2>/dev/null || true; ip netns del $B 2>/dev/null || true; }
cleanup_ns
ip netns add $A
ip netns add $B
ip link add ul0 netns $A type veth peer name ul0 netns $B
ip -n $A addr add 192.168.77.1/24 dev ul0
ip -n $B addr add 192.168.77.2/24 dev ul0
for n in $A $B; do ip -n $n link set ul0 up; ip -n $n link set lo up; done
(umask 077; wg genkey >"$tmp/a"; wg genkey >"$tmp/b")
pa=$(wg pubkey <"$tmp/a")
pb=$(wg pubkey <"$tmp/b")

# netd: link wgn0, port 51820.
ip netns exec $A "$NETD" wireguard wgn0 --private-key-file "$tmp/a" --listen-port 51820 \
  --address 10.9.0.1/24 --peer "$pb,192.168.77.2:51820,10.9.0.2/32" 2>"$tmp/netd-a.log" &
pids+=($!)
ip netns exec $B "$NETD" wireguard wgn0 --private-key-file "$tmp/b" --listen-port 51820 \
  --address 10.9.0.2/24 --peer "$pa,192.168.77.1:51820,10.9.0.1/32" 2>"$tmp/netd-b.log" &
pids+=($!)

# boringtun-cli: links wgba/wgbb (its UAPI socket is /var/run/wireguard/NAME.sock, one
# directory for both namespaces, so the names differ), port 51821, its default threads.
bt_up() { # NS NAME KEY PEERKEY PEERIP MYADDR PEERADDR
  ip netns exec "$1" "$BT" "$2" --foreground --disable-drop-privileges \
    >"$tmp/$2.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 50); do [ -S "/var/run/wireguard/$2.sock" ] && break; sleep 0.1; done
  ip netns exec "$1" wg set "$2" private-key "$3" listen-port 51821 \
    peer "$4" endpoint "$5:51821" allowed-ips "$7/32"
  ip -n "$1" addr add "$6/24" dev "$2"
  ip -n "$1" link set "$2" mtu 1420 up
}
bt_up $A wgba "$tmp/a" "$pb" 192.168.77.2 10.8.0.1 10.8.0.2
bt_up $B wgbb "$tmp/b" "$pa" 192.168.77.1 10.8.0.2 10.8.0.1

ip netns exec $B iperf3 -s -D -I "$tmp/iperf.pid" >/dev/null
sleep 0.5
pids+=("$(cat "$tmp/iperf.pid")")
# Handshakes first, so no run pays for one.
for dst in 10.9.0.2 10.8.0.2; do
  ip netns exec $A ping -c1 -W5 $dst >/dev/null || { echo "no ping to $dst" >&2; exit 1; }
done

gbit() { # DST -> Gbit/s received
  ip netns exec $A iperf3 -c "$1" -t "$SECS" -J |
    jq '.end.sum_received.bits_per_second / 1e9 * 1000 | round / 1000'
}
declare -a tn tb
for r in $(seq "$RUNS"); do
  tn[r]=$(gbit 10.9.0.2)
  tb[r]=$(gbit 10.8.0.2)
  echo "run $r: netd ${tn[r]} Gbit/s, boringtun-cli ${tb[r]} Gbit/s"
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END {printf "%.3f", s/NR}'; }
mn=$(mean "${tn[@]}")
mb=$(mean "${tb[@]}")
echo "netd wireguard:  $mn Gbit/s (mean of $RUNS x ${SECS}s iperf3 TCP)"
echo "boringtun-cli:   $mb Gbit/s"
echo "ratio netd/boringtun-cli: $(awk -v a="$mn" -v b="$mb" 'BEGIN {printf "%.2f", a/b}')"
