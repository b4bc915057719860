#!/bin/bash
# Provisions one VM of vagrant/Vagrantfile: provision.sh NODE ADVERTISE-IP ETCD-IP.
# Installs what netd needs to build and run, builds netd from /netd (this repository,
# rsynced by Vagrant) into /var/tmp/netd-target, installs netd and netctl to
# /usr/local/bin, runs etcd on the VM whose address is ETCD-IP, and starts netd as the
# systemd unit netd.service joined to that etcd. Idempotent: a second run rebuilds and
# restarts.
set -euo pipefail
ip4='^([0-9]{1,3}\.){3}[0-9]{1,3}$'
if [ $# -ne 3 ] || ! [[ $1 =~ ^[a-z][a-z0-9-]{0,30}$ ]] || ! [[ $2 =~ $ip4 ]] || ! [[ $3 =~ $ip4 ]]; then
  echo "provision: usage: provision.sh NODE ADVERTISE-IP ETCD-IP (got: $*)" >&2
  exit 2
fi
node=$1 addr=$2 etcd=$3
export DEBIAN_FRONTEND=noninteractive
apt=(apt-get -o DPkg::Lock::Timeout=600 -y -qq --no-install-recommends)
apt-get -qq update
"${apt[@]}" install build-essential pkg-config ca-certificates curl git \
  libnftables1 nftables iproute2 iputils-ping kmod conntrack jq \
  clang libbpf-dev protobuf-compiler libprotobuf-dev etcd-client >/dev/null
# Debian 12's cargo is older than netd's 1.85: rustup's stable instead.
if ! [ -x /root/.cargo/bin/cargo ]; then
  curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal >/dev/null
fi
( cd /netd && CARGO_TARGET_DIR=/var/tmp/netd-target /root/.cargo/bin/cargo build -q --release -p netd --bins )
install -m 0755 /var/tmp/netd-target/release/netd /var/tmp/netd-target/release/netctl /usr/local/bin/
if [ "$addr" = "$etcd" ]; then
  "${apt[@]}" install etcd-server >/dev/null
  cat >/etc/default/etcd <<CONF
ETCD_NAME=$node
ETCD_LISTEN_CLIENT_URLS=http://$etcd:2379,http://127.0.0.1:2379
ETCD_ADVERTISE_CLIENT_URLS=http://$etcd:2379
CONF
  systemctl enable -q etcd
  systemctl restart etcd
fi
cat >/etc/systemd/system/netd.service <<UNIT
[Unit]
Description=netd ($node, cluster etcd://$etcd:2379)
After=network-online.target
Wants=network-online.target
# The VMs come up one after another; until h1's etcd answers, netd exits and is
# restarted, for as long as it takes.
StartLimitIntervalSec=0

[Service]
ExecStart=/usr/local/bin/netd daemon --cluster etcd://$etcd:2379 --node $node --advertise-addr $addr
Restart=on-failure
RestartSec=2

[Install]
WantedBy=multi-user.target
UNIT
systemctl daemon-reload
systemctl enable -q netd
systemctl restart netd
echo "provision: $node up (netd --advertise-addr $addr, etcd at $etcd)"
