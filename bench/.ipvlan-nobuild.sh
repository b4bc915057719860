#!/bin/bash
# ipvlan vs bridge vs macvlan attach/detach p50 in one daemon and one boot of the VM lane
# (this development kernel has no ipvlan): ratios only, the lane being emulation.
#   sudo bench/ipvlan.sh [N] [--debug]
# --debug ships the debug build (minutes faster to build; the ratios then include
# unoptimised userspace, so prefer the release build for figures to keep).
set -euo pipefail
cd "$(dirname "$0")/.."
LANE=${NETD_SHARED_VMLANE:-$(pwd)/../shared/vmlane}
n=200 profile=release
for a in "$@"; do
  case $a in --debug) profile=debug ;; *) n=$a ;; esac
done
./scripts/install-deps.sh >/dev/null
"$LANE/build.sh" >/dev/null
if [ "$profile" = release ]; then
  : # built already
else
  cargo build -q -p netd --bins -p netd-bench --bin netd-bench-ipvlan
fi
share=$(mktemp -d)
trap 'rm -rf "$share"' EXIT
for b in netd netd-bench-ipvlan; do
  strip --strip-debug -o "$share/$b" "target/$profile/$b" 2>/dev/null || cp "target/$profile/$b" "$share/$b"
done
cat >"$share/run.sh" <<SCRIPT
#!/bin/bash
mkdir -p /tmp/bin && cp /share/netd /share/netd-bench-ipvlan /tmp/bin/ || exit 1
echo "kernel \$(uname -r), $profile build, in the VM lane"
/tmp/bin/netd-bench-ipvlan $n --netd /tmp/bin/netd
SCRIPT
chmod +x "$share/run.sh"
"$LANE/run.sh" "$share" run.sh --timeout "${NETD_VMLANE_TIMEOUT:-1200}"
