#!/bin/bash
# Installs the Debian packages netd needs to build, run, test and benchmark, skipping
# those already present. Idempotent; run as root (make demo / make test call it).
# Every program a test, a benchmark or a script of ../shared/engines runs is here: under
# NETD_TEST_REQUIRE=1 (CI) a missing one fails its test. The VM lane's own packages
# (QEMU, the guest kernel) are installed by ../shared/vmlane/build.sh, which
# scripts/vmlane-test.sh calls.
set -euo pipefail
pkgs=(
  build-essential pkg-config    # cc for -sys crates; strip (binutils) for the VM lane's binaries
  libnftables1 nftables         # netd loads libnftables at run time; nft(8) for operators and tests
  iproute2 iputils-ping kmod conntrack jq
  socat                         # firewall test: a published port reached from the host
  iptables                      # the reference portmap plugin (cni_libcni), dockerd; bench/services.sh peer
  strace                        # bench/services.sh: netlink bytes of each load
  tcpdump iperf3                # the engines' toolset, copied into the VM lane when present
  wireguard-tools               # wg(8): configures boringtun-cli, bench/wireguard.sh's peer
  containernetworking-plugins   # the reference plugins: chained tests and the CNI benchmark
  golang-go golang-github-appc-cni-dev  # cnitool (libcni 1.1), built by ../shared/engines/cnitool/build.sh
  podman runc busybox-static    # podman's CNI tests; busybox for ping/arping and the engines' image
  docker.io                     # a real dockerd for the Docker plugin's tests and bench/docker.sh
  containerd                    # its CRI plugin runs pod sandboxes on netd-cni (cni_cri), as a kubelet has it
  python3                       # ../shared/engines/libnetwork-recorder.py (bench/docker.sh's peer)
  bind9-dnsutils                # dig for the DNS integration tests
  dnsmasq-base                  # the DNS tests' fake upstream; a peer DNS server in bench/dns.sh
  dnsperf aardvark-dns procps   # bench/dns.sh: load generator, the other peer DNS server, pgrep
  clang libbpf-dev bpftool      # netd/build.rs compiles ebpf/*.c; bpftool for operators and the eBPF tests
  graphviz                      # `netctl graph`, `netd up --graph`: DOT laid out as SVG
  chromium                      # the graph test renders the SVG headless to PNG
  curl                          # the metrics test scrapes with a real HTTP client
  etcd-server etcd-client       # overlay networks' cluster store (etcd) and etcdctl, which the overlay tests read it with
  protobuf-compiler libprotobuf-dev  # protoc and its well-known .proto files for etcd-client's build.rs
  vagrant                       # the vagrant test: `vagrant validate` of vagrant/Vagrantfile (no VM started)
)
# Wait for another apt/dpkg run (another build on the machine) instead of failing.
apt=(apt-get -o DPkg::Lock::Timeout=600)
missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "install-deps: all packages present"
fi
if ! command -v cargo >/dev/null; then
  echo "install-deps: no cargo found; installing Debian's (netd needs Rust >= 1.85)"
  "${apt[@]}" update -qq
  DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq --no-install-recommends cargo rustc >/dev/null
fi
