#!/bin/bash
# Installs the Debian packages netd needs to build, run, test and benchmark, skipping
# those already present. Idempotent; run as root (make demo / make test call it).
set -euo pipefail
pkgs=(
  build-essential pkg-config    # cc for -sys crates
  libnftables1 nftables         # netd loads libnftables at run time; nft(8) for operators and tests
  iproute2 iputils-ping conntrack jq
  containernetworking-plugins   # the reference bridge/host-local plugins the benchmark compares with
  golang-go golang-github-appc-cni-dev podman busybox-static  # netd-cni tests: cnitool (libcni) and podman
  docker.io                     # a real dockerd for the Docker plugin's tests and bench/docker.sh
  bind9-dnsutils                # dig/nslookup for the DNS integration tests
  dnsperf aardvark-dns dnsmasq-base  # bench/dns.sh: load generator and the two peer DNS servers
)
missing=()
for p in "${pkgs[@]}"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi
if ! command -v cargo >/dev/null; then
  echo "install-deps: no cargo found; installing Debian's (netd needs Rust >= 1.85)"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends cargo rustc >/dev/null
fi
