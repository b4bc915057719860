#!/bin/bash
# A multi-host lab on one machine: N host namespaces (ndlab-h1..hN) on an underlay bridge
# (namespace ndlab-ul, 10.251.0.0/24, MTU 1500), an etcd in the underlay namespace, and a
# netd in each host joined to it (--cluster, --node hI, --advertise-addr 10.251.0.I).
#
#   sudo scripts/lab.sh up 3      # then: scripts/lab.sh ctl 1 network create -d overlay web
#   scripts/lab.sh ctl 2 sandbox create --network web a; scripts/lab.sh sh 2 ping ...
#   sudo scripts/lab.sh down
#
# Binaries come from $NETD_BIN (default target/debug). State, sockets and logs live under
# /run/ndlab; `down` kills only the processes whose PIDs `up` recorded there.
#
# LAB=NAME (default ndlab) names the lab: namespaces NAME-ul and NAME-h1..hN, run dir
# /run/NAME. Labs with different names live side by side (each underlay is a namespace of
# its own, so they all use 10.251.0.0/24); every command acts on the lab LAB names only.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${NETD_BIN:-$PWD/target/debug}
LAB=${LAB:-ndlab}
# A namespace name and a directory under /run: letters, digits and '-', short enough
# that NAME-h200 stays readable in `ip netns`.
[[ $LAB =~ ^[a-z][a-z0-9-]{0,23}$ ]] ||
  { echo "lab: LAB must be 1-24 of a-z, 0-9 and '-', starting with a letter (got '$LAB')" >&2; exit 2; }
RUN=/run/$LAB
UL=$LAB-ul
NET=10.251.0
ETCD_ADDR=$NET.254

# Every host of the lab shares this kernel's IPv4 neighbour table: there is one per kernel,
# not one per namespace, and its limits (gc_thresh1/2/3, default 128/512/1024 entries) count
# the entries of all namespaces together. With 50 hosts the sandboxes' own entries pass
# 1,024 and the kernel refuses new ones for seconds ("neighbor table overflow" in dmesg):
# a sandbox then drops its replies, and bench/overlay.sh measured that, not the overlay.
# Real hosts each have their own table. So the lab raises the limits while it is up
# (128 entries per host for each threshold step, never lowering them) and `down` puts back
# what it found.
NEIGH_GC=/proc/sys/net/ipv4/neigh/default/gc_thresh
raise_neigh_gc() {
  local n=$1 i cur want
  for i in 1 2 3; do
    cur=$(cat $NEIGH_GC$i)
    echo "$cur" >$RUN/gc_thresh$i.saved
    want=$((n * 128 * (1 << (i - 1))))
    [ "$want" -gt "$cur" ] && echo "$want" >$NEIGH_GC$i
  done
  return 0
}
restore_neigh_gc() {
  local i
  for i in 3 2 1; do
    [ -f $RUN/gc_thresh$i.saved ] && cat $RUN/gc_thresh$i.saved >$NEIGH_GC$i
  done
  return 0
}

up() {
  local n=${1:-3}
  [ "$n" -ge 1 ] && [ "$n" -le 200 ] || { echo "lab: up N with 1 <= N <= 200" >&2; exit 2; }
  command -v etcd >/dev/null || { echo "lab: etcd missing (scripts/install-deps.sh)" >&2; exit 1; }
  [ -x "$BIN/netd" ] || { echo "lab: $BIN/netd missing (cargo build -p netd --bins)" >&2; exit 1; }
  if [ -d $RUN ]; then echo "lab: already up (scripts/lab.sh down first)" >&2; exit 1; fi
  mkdir -p $RUN
  raise_neigh_gc "$n"
  ip netns add $UL
  ip -n $UL link set lo up
  ip -n $UL link add br0 type bridge
  ip -n $UL addr add $ETCD_ADDR/24 dev br0
  ip -n $UL link set br0 up
  ip netns exec $UL etcd --name $LAB --data-dir $RUN/etcd \
    --listen-client-urls http://$ETCD_ADDR:2379 --advertise-client-urls http://$ETCD_ADDR:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster $LAB=http://127.0.0.1:2380 >$RUN/etcd.log 2>&1 &
  echo $! >$RUN/etcd.pid
  for i in $(seq "$n"); do
    local h=$LAB-h$i
    ip netns add $h
    ip -n $h link set lo up
    ip link add ul$i netns $UL type veth peer name eth0 netns $h
    ip -n $UL link set ul$i master br0 up
    ip -n $h addr add $NET.$i/24 dev eth0
    ip -n $h link set eth0 up
  done
  for _ in $(seq 100); do
    ip netns exec $UL bash -c "echo >/dev/tcp/$ETCD_ADDR/2379" 2>/dev/null && break
    sleep 0.1
  done
  for i in $(seq "$n"); do
    local d=$RUN/h$i
    mkdir -p "$d"
    nsenter --net=/run/netns/$LAB-h$i "$BIN/netd" daemon --state-dir "$d/state" --socket "$d/netd.sock" \
      --netns-dir "$d/netns" --etc-netns-dir "$d/etc" --docker-plugin-dir none \
      --cluster etcd://$ETCD_ADDR:2379 --node h$i --advertise-addr $NET.$i >"$d/netd.log" 2>&1 &
    echo $! >"$d/netd.pid"
  done
  for i in $(seq "$n"); do
    for _ in $(seq 300); do [ -S $RUN/h$i/netd.sock ] && break; sleep 0.1; done
  done
  echo "lab: $n hosts up; etcd at $ETCD_ADDR:2379 (in netns $UL)"
}

down() {
  for p in $RUN/h*/netd.pid $RUN/etcd.pid; do
    [ -f "$p" ] && kill "$(cat "$p")" 2>/dev/null || true
  done
  sleep 0.5
  for m in $RUN/h*/netns/*; do
    [ -e "$m" ] && umount -l "$m" 2>/dev/null || true
  done
  for d in $RUN/h*/netns; do [ -d "$d" ] && umount -l "$d" 2>/dev/null || true; done
  # This lab's namespaces only: NAME-ul and NAME-hI, not another lab whose name starts
  # with this one's (ndlab-x-h1 is lab ndlab-x's).
  for h in $(ip netns list | awk -v re="^$LAB-(ul|h[0-9]+)\$" '$1 ~ re {print $1}'); do ip netns del "$h"; done
  restore_neigh_gc
  rm -rf $RUN
  echo "lab: down"
}

case "${1:-}" in
  up) up "${2:-3}" ;;
  down) down ;;
  ctl) i=$2; shift 2; exec "$BIN/netctl" --socket $RUN/h$i/netd.sock "$@" ;;
  sh) i=$2; shift 2; exec nsenter --net=/run/netns/$LAB-h$i "$@" ;;
  *) echo "usage: $0 up [N] | down | ctl I NETCTL-ARGS... | sh I CMD..." >&2; exit 2 ;;
esac
