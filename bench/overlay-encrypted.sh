#!/bin/bash
# Encrypted overlay networks (issue 20), one run on a 2-host scripts/lab.sh cluster: TCP
# throughput (iperf3, SECONDS each) from a sandbox on h1 to one on h2 over a plain overlay
# network, a WireGuard one (-o encrypted=wireguard: the kernel's WireGuard where there is
# one, else netd's userspace link) and, where the kernel has ESP, an IPsec one
# (-o encrypted), ROUNDS rounds interleaved; each encrypted mode as a ratio to the plain
# network measured in the same run.
#   sudo bench/overlay-encrypted.sh [ROUNDS] [SECONDS]
# NETD_BIN=DIR takes netd/netctl from DIR (use a release build: target/release).
# LAB=NAME (default ndenc) names the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-5}
export LAB=${LAB:-ndenc}
lab=scripts/lab.sh
for p in iperf3 jq nsenter; do
  command -v "$p" >/dev/null || { echo "bench/overlay-encrypted.sh: $p is missing (scripts/install-deps.sh)" >&2; exit 1; }
done
srv=""
cleanup() {
  [ -n "$srv" ] && kill "$srv" 2>/dev/null
  $lab down >/dev/null 2>&1 || true
}
trap cleanup EXIT
$lab up 2 >/dev/null
ctl() { $lab ctl "$@"; }
ctl 1 network create -d overlay --subnet 10.80.0.0/24 plain >/dev/null
ctl 1 network create -d overlay -o encrypted=wireguard --subnet 10.81.0.0/24 wg >/dev/null
nets=(plain wg)
if err=$(ctl 1 network create -d overlay -o encrypted --subnet 10.82.0.0/24 ipsec 2>&1 >/dev/null); then
  nets+=(ipsec)
else
  echo "ipsec: not measured here: $err"
fi
on=()
for n in "${nets[@]}"; do on+=(--network "$n"); done
ctl 1 sandbox create "${on[@]}" a >/dev/null
ctl 2 sandbox create "${on[@]}" b >/dev/null
sb() { nsenter --net="/run/$LAB/h$1/netns/$2" "${@:3}"; }
ip_of() { ctl 2 sandbox inspect b | jq -r --arg n "$1" '.[0].endpoints[] | select(.network == $n) | .ipv4' | cut -d/ -f1; }
# nsenter itself, not the function in a subshell: $! is then iperf3's PID (nsenter execs
# it), so the trap ends the server and not only its parent shell.
nsenter --net="/run/$LAB/h2/netns/b" iperf3 -s >/dev/null 2>&1 &
srv=$!
sleep 1
kind=$(ip -n "$LAB-h1" -d link show netdwg0 2>/dev/null | grep -q 'wireguard' && echo kernel || echo userspace)
declare -A sum
for n in "${nets[@]}"; do sum[$n]=0; done
for r in $(seq 1 "$rounds"); do
  for n in "${nets[@]}"; do
    ip=$(ip_of "$n")
    for _ in 1 2 3 4 5; do sb 1 a ping -c1 -W1 "$ip" >/dev/null 2>&1 && break; done
    bps=$(sb 1 a iperf3 -c "$ip" -t "$secs" -J | jq '.end.sum_received.bits_per_second')
    g=$(awk -v b="$bps" 'BEGIN { printf "%.3f", b / 1e9 }')
    echo "round $r: $n $g Gbit/s"
    sum[$n]=$(awk -v a="${sum[$n]}" -v b="$g" 'BEGIN { print a + b }')
  done
done
plain=$(awk -v s="${sum[plain]}" -v r="$rounds" 'BEGIN { print s / r }')
printf '%-28s %8.3f Gbit/s\n' "plain overlay" "$plain"
for n in "${nets[@]}"; do
  [ "$n" = plain ] && continue
  m=$(awk -v s="${sum[$n]}" -v r="$rounds" 'BEGIN { print s / r }')
  label=$n
  [ "$n" = wg ] && label="wireguard ($kind)"
  printf '%-28s %8.3f Gbit/s  ratio to plain %.2f\n' "$label" "$m" "$(awk -v a="$m" -v b="$plain" 'BEGIN { print a / b }')"
done
