#!/bin/bash
# DNS serving: netd's embedded server next to aardvark-dns (podman/netavark) and dnsmasq,
# all serving the same N names (default 1,000, aliases of 100 sandboxes), measured in the same run with
# dnsperf from inside one sandbox. Prints max QPS, p50/p99 latency at a fixed load (half
# of netd's max QPS) and the ratios, then how fresh names are (API return -> first answer).
#   sudo bench/dns.sh [N] [SECONDS]
#
# Topology: a host namespace with a release netd, network bench (10.99.0.0/16) with
# sandboxes n0..n99 whose aliases are the N names h0..h(N-1), and a client sandbox. netd answers at 127.0.0.11:53 inside the
# client; aardvark-dns and dnsmasq listen on the bridge gateway (ports 5301/5302) in the
# host namespace, loaded with the same names and addresses. The 2 CPUs are shared by
# dnsperf and the server under test, the same for all three.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000}
DUR=${2:-8}
./scripts/install-deps.sh >/dev/null
cargo build --release -q -p netd --bins -p netd-bench
ROOT=$(pwd)
NETD=$ROOT/target/release/netd
NETCTL=$ROOT/target/release/netctl
AARDVARK=$(command -v aardvark-dns || echo /usr/lib/podman/aardvark-dns)
DNSMASQ=$(command -v dnsmasq || echo /usr/sbin/dnsmasq)
for b in "$AARDVARK" "$DNSMASQ" "$(command -v dnsperf)"; do
  [ -x "$b" ] || { echo "bench/dns.sh: missing $b (scripts/install-deps.sh installs it)"; exit 1; }
done

H=nddns-bench-$$
BASE=/run/nddns-bench-$$
mkdir -p "$BASE"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$BASE/aardvark/aardvark.pid" ] && kill "$(cat "$BASE/aardvark/aardvark.pid")" 2>/dev/null || true
  sleep 0.3
  for f in "$BASE"/netns/*; do [ -e "$f" ] && umount -l "$f" 2>/dev/null; done
  umount -l "$BASE/netns" 2>/dev/null || true
  ip netns del "$H" 2>/dev/null || true
  rm -rf "$BASE"
}
trap cleanup EXIT
trap 'echo "bench/dns.sh: failed at line $LINENO: $BASH_COMMAND" >&2' ERR
ip netns add "$H"
ip -n "$H" link set lo up
NETD_LOG=warn nsenter --net=/run/netns/$H "$NETD" daemon --state-dir "$BASE/state" --socket "$BASE/netd.sock" \
  --netns-dir "$BASE/netns" --etc-netns-dir "$BASE/etc" 2>"$BASE/netd.log" &
NETD_PID=$!
PIDS+=("$NETD_PID")
ctl() { "$NETCTL" --socket "$BASE/netd.sock" "$@"; }
for _ in $(seq 200); do ctl network ls -q >/dev/null 2>&1 && break; sleep 0.05; done
ctl network create bench --subnet 10.99.0.0/16 >/dev/null
ctl sandbox create client --network bench >/dev/null
# The N names are network aliases spread over S sandboxes (default 100), so every server
# holds the same N names -> addresses without the run spending minutes creating namespaces.
S=$(( N < ${SANDBOXES:-100} ? N : ${SANDBOXES:-100} ))
PER=$(( (N + S - 1) / S ))
echo "creating $S sandboxes holding $N names..."
for i in $(seq 0 $((S - 1))); do
  args=()
  for j in $(seq 0 $((PER - 1))); do k=$((i * PER + j)); [ "$k" -lt "$N" ] && args+=(--alias "h$k"); done
  ctl sandbox create "n$i" --network bench "${args[@]}" >/dev/null
done
ctl network inspect bench --json >"$BASE/net.json" 2>/dev/null || ctl network inspect bench >"$BASE/net.json"
GW=$(jq -r '.[0].subnets[0].gateway' "$BASE/net.json")
CLIENT_IP=$(jq -r '.[0].endpoints[] | select(.sandbox=="client") | .ipv4' "$BASE/net.json" | cut -d/ -f1)
# hosts: "IP name name ..." per sandbox (its aliases only: those are the N names).
jq -r '.[0].endpoints[] | select(.sandbox!="client") | "\(.ipv4 | split("/")[0]) \(.aliases | join(" "))"' "$BASE/net.json" >"$BASE/hosts"
awk '{ for (i = 2; i <= NF; i++) print $i " A" }' "$BASE/hosts" >"$BASE/queries"
[ "$(wc -l <"$BASE/queries")" -eq "$N" ] || { echo "expected $N names"; exit 1; }

# aardvark-dns: one config file per network; first line the listen IP, then
# "<id> <ipv4> <ipv6> <names>". It answers only requesters it knows, so the client is listed.
mkdir -p "$BASE/aardvark"
{
  echo "$GW"
  printf '%064x %s  client\n' 0 "$CLIENT_IP"
  i=1
  while read -r ip names; do printf '%064x %s  %s\n' "$i" "$ip" "${names// /,}"; i=$((i + 1)); done <"$BASE/hosts"
} >"$BASE/aardvark/bench"
nsenter --net=/run/netns/$H "$AARDVARK" --config "$BASE/aardvark" -p 5301 run 2>"$BASE/aardvark-dns.log"
# dnsmasq: the same names from a hosts file, no upstream, cache as large as it goes.
nsenter --net=/run/netns/$H "$DNSMASQ" --keep-in-foreground --no-resolv --no-hosts --addn-hosts="$BASE/hosts" \
  --listen-address="$GW" --bind-interfaces --port=5302 --pid-file= --user=root --cache-size=10000 \
  --local-ttl=600 2>"$BASE/dnsmasq.log" &
PIDS+=("$!")
sleep 0.5

in_client() { nsenter --net="$BASE/netns/client" "$@"; }
# Sanity: every server answers the same name with the same address.
want=$(head -1 "$BASE/hosts" | cut -d' ' -f1)
name=$(head -1 "$BASE/hosts" | cut -d' ' -f2)  # first alias of the first sandbox
for s in "127.0.0.11 53 netd" "$GW 5301 aardvark-dns" "$GW 5302 dnsmasq"; do
  set -- $s
  got=
  for _ in $(seq 50); do  # servers loading 1,000 names may take a moment to answer
    got=$(in_client dig @"$1" -p "$2" +short +time=1 +tries=1 "$name" A 2>/dev/null | head -1 || true)
    [ "$got" = "$want" ] && break
    sleep 0.2
  done
  [ "$got" = "$want" ] || { echo "$3 answered '$got' for $name, expected $want"; tail -5 "$BASE/$3.log" 2>/dev/null; exit 1; }
done

maxqps() { # server port -> QPS
  in_client dnsperf -s "$1" -p "$2" -d "$BASE/queries" -l "$DUR" -c 4 -q 256 -t 2 2>/dev/null \
    | awk '/Queries per second:/ { print int($4) }'
}
latency() { # server port rate -> "p50_us p99_us lost%"
  in_client dnsperf -s "$1" -p "$2" -d "$BASE/queries" -l "$DUR" -c 4 -q 256 -t 2 -Q "$3" -v >"$BASE/lat.out" 2>/dev/null || true
  lost=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$BASE/lat.out")
  awk '/^> / { printf "%d\n", $NF * 1e6 }' "$BASE/lat.out" | sort -n | awk -v lost="${lost:--}" \
    '{ l[NR] = $1 } END { if (NR == 0) { print "- - -"; exit }
       i50 = int(NR * 0.5); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
       printf "%d %d %s\n", l[i50], l[i99], lost }'
}

echo "max QPS over ${DUR}s each (dnsperf -c 4 -q 256, $N names, from the client sandbox):"
Q_NETD=$(maxqps 127.0.0.11 53)
Q_AARD=$(maxqps "$GW" 5301)
Q_MASQ=$(maxqps "$GW" 5302)
printf '  %-14s %8s qps\n' netd "$Q_NETD" aardvark-dns "$Q_AARD" dnsmasq "$Q_MASQ"
RATE=$((Q_NETD / 2))
echo "latency at a fixed ${RATE} qps (half of netd's max) over ${DUR}s each:"
printf '  %-14s %8s %8s %8s\n' server p50_us p99_us lost%
for s in "127.0.0.11 53 netd" "$GW 5301 aardvark-dns" "$GW 5302 dnsmasq"; do
  set -- $s
  printf '  %-14s %8s %8s %8s\n' "$3" $(latency "$1" "$2" "$RATE")
done
awk -v n="$Q_NETD" -v a="$Q_AARD" -v m="$Q_MASQ" 'BEGIN {
  printf "ratios: netd/aardvark-dns max QPS = %.2fx (goal >= 2x), netd/dnsmasq = %.2fx (goal >= 1x)\n", n / a, n / m }'
kill "$NETD_PID"
wait "$NETD_PID" 2>/dev/null || true
PIDS=("${PIDS[@]:1}")

echo "freshness (API call return -> first successful answer in another sandbox):"
"$ROOT/target/release/netd-bench-dns-fresh" --netd "$NETD" 200
