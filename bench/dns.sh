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
#
# The latency rows also show the client's floor: netd-bench-dns-echo, a responder that does
# nothing but copy the question and add one A record (one blocking thread, no table), on
# 127.0.0.1 in the client's own namespace (the loopback path netd's 127.0.0.11 takes, with
# the namespace's conntrack). No server can have a lower p99 than it on this machine at
# the same load, so a p99 goal below the floor is not measurable here. Each row also
# says where the time went (from /proc/*/schedstat and /proc/stat over the run): the
# server's CPU, how long the server's and dnsperf's threads sat runnable but not running
# (run-queue wait, % of the run, summed over threads), and the CPU other processes on
# the machine took. ROUNDS (default 3) interleaved rounds; the summary takes medians.
# Latency is measured in two placements (PLACEMENTS, default "shared pinned"): shared,
# where dnsperf and the server float over both CPUs, and pinned, dnsperf on CPU 0 and the
# server on CPU 1 (the usual way to benchmark a DNS server: the load generator must not
# take the server's CPU). Both are printed with their own verdict.
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

in_client() { nsenter --net="$BASE/netns/client" ${CLIENT_CPU:+taskset -c "$CLIENT_CPU"} "$@"; }
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
# Sums of (run ns, run-queue wait ns) over every thread of a process.
sched_of() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ r += $1; w += $2 } END { printf "%.0f %.0f\n", r, w }'; }
# Busy jiffies of the whole machine (user+nice+system+irq+softirq+steal).
busy() { awk '/^cpu / { printf "%.0f\n", $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
HZ=$(getconf CLK_TCK)
NCPU=$(nproc)
latency() { # server port rate server_pid -> "p50_us p99_us lost% srv_cpu% srv_rqwait% cli_rqwait% other_cpu%"
  in_client dnsperf -s "$1" -p "$2" -d "$BASE/queries" -l "$DUR" -c 4 -q 256 -t 2 -Q "$3" -v >"$BASE/lat.out" 2>/dev/null &
  local dp=$! t0 t1 s0 s1 c0 c1 b0 b1 cli
  sleep 0.5
  cli=$(pgrep -P "$dp" -x dnsperf || echo "$dp")
  t0=$(date +%s%N); s0=$(sched_of "$4"); c0=$(sched_of "$cli"); b0=$(busy)
  sleep "$(awk -v d="$DUR" 'BEGIN { print d - 1 }')"
  t1=$(date +%s%N); s1=$(sched_of "$4"); c1=$(sched_of "$cli"); b1=$(busy)
  wait "$dp" || true
  lost=$(awk '/Queries lost:/ { gsub(/[()%]/, "", $4); print $4 }' "$BASE/lat.out")
  stats=$(echo "$t0 $t1 $s0 $s1 $c0 $c1 $b0 $b1" | awk -v hz="$HZ" -v ncpu="$NCPU" '{
    win = $2 - $1; srun = $5 - $3; swait = $6 - $4; crun = $9 - $7; cwait = $10 - $8
    other = ($12 - $11) / hz * 1e9 - srun - crun; if (other < 0) other = 0
    printf "%.0f %.0f %.0f %.0f", 100 * srun / win, 100 * swait / win, 100 * cwait / win, 100 * other / (win * ncpu) }')
  awk '/^> / { printf "%d\n", $NF * 1e6 }' "$BASE/lat.out" | sort -n | awk -v lost="${lost:--}" -v st="$stats" \
    '{ l[NR] = $1 } END { if (NR == 0) { print "- - - " st; exit }
       i50 = int(NR * 0.5); if (i50 < 1) i50 = 1; i99 = int(NR * 0.99); if (i99 < 1) i99 = 1
       printf "%d %d %s %s\n", l[i50], l[i99], lost, st }'
}

# The floor responder, in the client's namespace on its loopback.
nsenter --net="$BASE/netns/client" "$ROOT/target/release/netd-bench-dns-echo" 127.0.0.1:5300 &
ECHO_PID=$!
PIDS+=("$ECHO_PID")
DNS_TID=$(grep -l '^netd-dns$' /proc/"$NETD_PID"/task/*/comm | head -1 | cut -d/ -f5)
MASQ_PID=$(pgrep -n -f "dnsmasq.*$BASE/hosts")
AARD_PID=$(pgrep -n -f "aardvark-dns --config $BASE")
sleep 0.2

echo "max QPS over ${DUR}s each (dnsperf -c 4 -q 256, $N names, from the client sandbox):"
Q_NETD=$(maxqps 127.0.0.11 53)
Q_AARD=$(maxqps "$GW" 5301)
Q_MASQ=$(maxqps "$GW" 5302)
Q_ECHO=$(maxqps 127.0.0.1 5300)
printf '  %-14s %8s qps\n' netd "$Q_NETD" aardvark-dns "$Q_AARD" dnsmasq "$Q_MASQ" "floor (echo)" "$Q_ECHO"
RATE=$((Q_NETD / 2))
ROUNDS=${ROUNDS:-3}
# Two placements per server. "shared": dnsperf and the server float over both CPUs, as
# they would on a busy node. "pinned": dnsperf on CPU 0, the server (netd's DNS thread;
# every thread of the others) on CPU 1, the way DNS servers are benchmarked with the load
# generator on another machine: the server never waits behind dnsperf's threads.
# PLACEMENTS="shared" skips the pinned rows (needs 2 CPUs).
PLACEMENTS=${PLACEMENTS:-shared pinned}
[ "$NCPU" -ge 2 ] || PLACEMENTS=shared
cpus() { if [ "$1" = pinned ]; then echo 1; else echo "0-$((NCPU - 1))"; fi; }
# Moves a server: netd's DNS thread only (the daemon's other threads are idle here), every
# thread of the others.
place() { # placement server pid
  if [ "$2" = netd ]; then taskset -p -c "$(cpus "$1")" "$3"; else taskset -a -p -c "$(cpus "$1")" "$3"; fi >/dev/null
}
echo "latency at a fixed ${RATE} qps (half of netd's max) over ${DUR}s each, $ROUNDS interleaved rounds, placements: $PLACEMENTS"
echo "  (srv_cpu: server's CPU % of one core; rq_wait: % of the run the server's / dnsperf's threads"
echo "   were runnable but not running; other: CPU % of all ${NCPU} cores taken by other processes)"
printf '  %-5s %-7s %-14s %8s %8s %7s %8s %11s %11s %7s\n' round place server p50_us p99_us lost% srv_cpu srv_rq_wait cli_rq_wait other
: >"$BASE/rows"
for r in $(seq "$ROUNDS"); do
  for where in $PLACEMENTS; do
    for s in "127.0.0.11 53 netd $DNS_TID" "127.0.0.1 5300 floor(echo) $ECHO_PID" \
             "$GW 5301 aardvark-dns $AARD_PID" "$GW 5302 dnsmasq $MASQ_PID"; do
      set -- $s
      place "$where" "$3" "$4"
      CLIENT_CPU=$([ "$where" = pinned ] && echo 0 || true)
      row=$(latency "$1" "$2" "$RATE" "$4")
      place shared "$3" "$4"
      CLIENT_CPU=
      echo "$3 $where $r $row" >>"$BASE/rows"
      printf '  %-5s %-7s %-14s %8s %8s %7s %7s%% %10s%% %10s%% %6s%%\n' "$r" "$where" "$3" $row
    done
  done
done
# Medians over the rounds, per server and placement. Rows: "server place round p50 p99 lost srv rqs rqc other".
med() { awk -v s="$1" -v w="$2" -v f="$3" '$1 == s && $2 == w { print $f }' "$BASE/rows" | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : 0) }'; }
echo "medians over $ROUNDS rounds:"
for where in $PLACEMENTS; do
  for s in netd 'floor(echo)' aardvark-dns dnsmasq; do
    printf '  %-7s %-14s p50 %6s us  p99 %6s us  other load %3s%%\n' "$where" "$s" "$(med "$s" "$where" 4)" "$(med "$s" "$where" 5)" "$(med "$s" "$where" 10)"
  done
done
awk -v n="$Q_NETD" -v a="$Q_AARD" -v m="$Q_MASQ" 'BEGIN {
  printf "ratios: netd/aardvark-dns max QPS = %.2fx (goal >= 2x), netd/dnsmasq = %.2fx (goal >= 1x)\n", n / a, n / m }'
for where in $PLACEMENTS; do
  P99_NETD=$(med netd "$where" 5); P99_FLOOR=$(med 'floor(echo)' "$where" 5); P99_MASQ=$(med dnsmasq "$where" 5); P99_AARD=$(med aardvark-dns "$where" 5)
  awk -v w="$where" -v pn="$P99_NETD" -v pf="$P99_FLOOR" -v pm="$P99_MASQ" -v pa="$P99_AARD" 'BEGIN {
    printf "p99 at half netd max QPS, %s (medians): netd %d us (goal < 1000 us: %s); floor %d us; netd/floor = %.2fx; dnsmasq/netd = %.2fx; aardvark-dns/netd = %.2fx\n",
      w, pn, (pn < 1000 ? "met" : "NOT met"), pf, (pf ? pn / pf : 0), (pn ? pm / pn : 0), (pn ? pa / pn : 0) }'
  # Per round, netd next to the floor measured right after it (same machine state), and
  # the rounds in which other processes took < 10% of the CPUs during both.
  awk -v w="$where" -v rounds="$ROUNDS" '$2 == w && $1 == "netd" { n[$3] = $5; no[$3] = $10 } $2 == w && $1 == "floor(echo)" { f[$3] = $5; fo[$3] = $10 }
    END {
      line = "  per round p99 netd/floor (" w "):"; q = ""
      for (i = 1; i <= rounds; i++) {
        line = line sprintf(" %d/%d us (other %d%%)", n[i], f[i], no[i] > fo[i] ? no[i] : fo[i])
        if (no[i] < 10 && fo[i] < 10) { q = q sprintf(" round %d: netd %d us, floor %d us;", i, n[i], f[i]); quiet++; if (n[i] < 1000) met++ }
      }
      print line
      if (quiet) printf "  quiet rounds (other < 10%%):%s netd p99 < 1 ms in %d of %d\n", q, met, quiet
      else print "  no quiet round (other processes took >= 10% of the CPUs in every round): the p99 goal could not be judged in this run"
    }' "$BASE/rows"
  if [ "$P99_FLOOR" -ge 1000 ]; then echo "  $where: the floor's median p99 is >= 1 ms: in this placement and run no server could show < 1 ms"; fi
done
kill "$NETD_PID"
wait "$NETD_PID" 2>/dev/null || true
PIDS=("${PIDS[@]:1}")

echo "freshness (API call return -> first successful answer in another sandbox):"
"$ROOT/target/release/netd-bench-dns-fresh" --netd "$NETD" 200
