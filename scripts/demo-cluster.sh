#!/bin/bash
# `sudo make demo-cluster`: the voting app (examples/voting-app.toml's tiers) spread over a
# 3-host lab (scripts/lab.sh, lab name $LAB, default nddemo) on two overlay networks:
#
#   h1: vote, result     h2: redis, db     h3: worker
#   frontend (overlay): vote, redis, worker      backend (overlay): worker, db, result
#
# Each tier is a sandbox with a responder (socat) that answers TCP with the tier's name.
# From every sandbox to every other one, by name (the sandbox's DNS at 127.0.0.11), it
# prints who reaches whom: tiers sharing a network must reach each other, the others
# must not (networks are isolated across hosts too). Exits non-zero when any pair is
# not as expected. The lab is removed at the end, also on failure or Ctrl-C; with
# KEEP=1 it stays up and the command that removes it is printed.
set -euo pipefail
cd "$(dirname "$0")/.."
export LAB=${LAB:-nddemo}
export NETD_BIN=${NETD_BIN:-$PWD/target/debug}
for p in socat dig etcd jq; do
  command -v $p >/dev/null || { echo "demo-cluster: $p missing (scripts/install-deps.sh)" >&2; exit 1; }
done
L=scripts/lab.sh
RUN=/run/$LAB
# tier host networks port
TIERS=(
  "vote 1 frontend 80"
  "redis 2 frontend 6379"
  "worker 3 frontend,backend 80"
  "db 2 backend 5432"
  "result 1 backend 80"
)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "demo-cluster: left up; remove it with: sudo LAB=$LAB scripts/lab.sh down"
  else
    $L down >/dev/null
  fi
}
$L up 3
trap cleanup EXIT
trap 'exit 130' INT TERM
$L ctl 1 network create -d overlay --subnet 10.81.0.0/24 frontend >/dev/null
$L ctl 1 network create -d overlay --subnet 10.82.0.0/24 backend >/dev/null
for i in 2 3; do
  for n in frontend backend; do
    for _ in $(seq 100); do $L ctl $i network ls -q | grep -qx $n && break; sleep 0.1; done
  done
done
for t in "${TIERS[@]}"; do
  read -r name host nets port <<<"$t"
  args=()
  for n in ${nets//,/ }; do args+=(--network "$n"); done
  $L ctl "$host" sandbox create "${args[@]}" "$name" >/dev/null
  nsenter --net="$RUN/h$host/netns/$name" socat TCP-LISTEN:"$port",fork,reuseaddr SYSTEM:"echo $name" &
  pids+=($!)
done
echo "demo-cluster: 5 tiers on 3 hosts (vote, result on h1; redis, db on h2; worker on h3)"
# Every tier's addresses, for the isolation checks.
declare -A ADDRS
for t in "${TIERS[@]}"; do
  read -r name host _ _ <<<"$t"
  ADDRS[$name]=$($L ctl "$host" sandbox inspect "$name" | jq -r '.[0].endpoints[].ipv4 | split("/")[0]' | tr '\n' ' ')
done

# probe FROM TO PORT: the name TO as FROM's DNS answers it, then a TCP connection that
# must answer TO (up to 5 s for the overlay's FDB and names to reach every host).
probe() {
  local from=$1 fh=$2 to=$3 port=$4 ip ans
  for _ in $(seq 25); do
    ip=$(nsenter --net="$RUN/h$fh/netns/$from" dig +short +time=1 +tries=1 @127.0.0.11 "$to" 2>/dev/null | head -1)
    if [ -n "$ip" ]; then
      ans=$(nsenter --net="$RUN/h$fh/netns/$from" socat -T1 - TCP:"$ip":"$port",connect-timeout=1 </dev/null 2>/dev/null || true)
      [ "$ans" = "$to" ] && return 0
    fi
    sleep 0.2
  done
  return 1
}
shares() { # nets1 nets2: whether they share a network
  local a
  for a in ${1//,/ }; do [[ ",$2," == *",$a,"* ]] && return 0; done
  return 1
}
bad=0
printf '%-8s' "from\\to"
for t in "${TIERS[@]}"; do read -r n _ _ _ <<<"$t"; printf '%-9s' "$n"; done
echo
for f in "${TIERS[@]}"; do
  read -r fn fh fnets _ <<<"$f"
  printf '%-8s' "$fn"
  for t in "${TIERS[@]}"; do
    read -r tn _ tnets tport <<<"$t"
    if [ "$fn" = "$tn" ]; then printf '%-9s' "."; continue; fi
    if shares "$fnets" "$tnets"; then
      if probe "$fn" "$fh" "$tn" "$tport"; then cell=yes; else cell="NO!"; bad=$((bad + 1)); fi
    else
      # Isolated: neither the name nor any of TO's addresses answers (one quick try each).
      cell=no
      ip=$(nsenter --net="$RUN/h$fh/netns/$fn" dig +short +time=1 +tries=1 @127.0.0.11 "$tn" 2>/dev/null | head -1)
      for a in $ip ${ADDRS[$tn]}; do
        ans=$(nsenter --net="$RUN/h$fh/netns/$fn" socat -T1 - TCP:"$a":"$tport",connect-timeout=1 </dev/null 2>/dev/null || true)
        if [ "$ans" = "$tn" ]; then cell="LEAK!"; bad=$((bad + 1)); break; fi
      done
    fi
    printf '%-9s' "$cell"
  done
  echo
done
echo "(yes/no: as expected — tiers sharing a network reach each other by name, the others not; NO!/LEAK!: not as expected)"
if [ "$bad" -gt 0 ]; then
  echo "demo-cluster: $bad pair(s) not as expected" >&2
  exit 1
fi
echo "demo-cluster: every pair as expected"
