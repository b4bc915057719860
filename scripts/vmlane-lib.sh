# Shared by scripts/vmlane-test.sh and scripts/vmlane-bench.sh (sourced; needs $share).

# ship SRC NAME: a copy of SRC in the share without debug info (the debug binaries are
# ~150 MB).
ship() {
  strip --strip-debug -o "$share/$2" "$1" 2>/dev/null || cp "$1" "$share/$2"
}

# lane_modules SHARE SCRIPT: modules netd needs that the lane's initramfs lacks, copied
# into SHARE with lines in SHARE/SCRIPT that load them. `meta iifname` in netd's bridge
# table (anti-spoofing) is nft_meta_bridge; the trunk test's containers make VLAN
# devices (8021q); an internal ipvlan network's parent is a dummy link (dummy); the
# userspace WireGuard link of encrypted overlay networks is a TUN device (tun). Taken
# from the lane's kernel with their dependencies, in load order (one already loaded
# fails harmlessly), as build.sh does. Then the TUN character device (the initramfs has
# no udev to make it).
lane_modules() {
  local k m f
  k=$(cat "${NETD_VMLANE_DIR:-${TMPDIR:-/tmp}/netd-vmlane}/kernel" 2>/dev/null || true)
  for m in nft_meta_bridge 8021q dummy tun; do
    for f in $(modprobe -S "$k" --show-depends "$m" 2>/dev/null | awk '$1 == "insmod" { print $2 }'); do
      cp "$f" "$1/" && echo "insmod /share/$(basename "$f") 2>/dev/null" >>"$1/$2"
    done
  done
  echo 'mkdir -p /dev/net && { [ -e /dev/net/tun ] || mknod /dev/net/tun c 10 200; }' >>"$1/$2"
}
