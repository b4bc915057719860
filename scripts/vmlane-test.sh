#!/bin/bash
# Runs the integration test binaries listed in integration/vmlane-tests (those that need
# kernel features this machine's kernel lacks, such as bridge VLAN filtering) inside the
# VM lane (../shared/vmlane: a Debian 6.1 kernel under QEMU, one boot for all of them).
# The lane has no cargo, so netd, netctl, netd-cni and the test binaries are built here and
# shared into the guest (debug info stripped), where the tests find them through
# NETD_TEST_BIN_DIR. In the guest NETD_TEST_REQUIRE=1 and NETD_TEST_LANE=vm: no test may
# skip there except one that needs this host's kernel (skip_in_lane, docs/testing.md).
#   scripts/vmlane-test.sh [TEST ...]        default: every test in integration/vmlane-tests
# When the lane cannot run (no lane, no QEMU, not root) it prints
# "suite skipped (vm lane: TESTS): reason" and exits 0, or under NETD_TEST_REQUIRE=1
# prints "suite failed (vm lane: TESTS): ..." and exits 1.
set -uo pipefail
cd "$(dirname "$0")/.."
LANE=${NETD_SHARED_VMLANE:-$(pwd)/../shared/vmlane}
mapfile -t LANE_TESTS < <(grep -v '^#' integration/vmlane-tests | grep .)
tests=("${@:-${LANE_TESTS[@]}}")
skip() {
  if [ "${NETD_TEST_REQUIRE:-0}" = 1 ]; then
    echo "suite failed (vm lane: ${tests[*]}): required but cannot run: $*"
    exit 1
  fi
  echo "suite skipped (vm lane: ${tests[*]}): $*"
  exit 0
}
[ "$(id -u)" -eq 0 ] || skip "they need root"
[ -x "$LANE/run.sh" ] || skip "no VM lane at $LANE"
# The lane's build installs QEMU and the guest kernel the first time; later runs take seconds.
if ! build_log=$("$LANE/build.sh" 2>&1); then
  printf '%s\n' "$build_log" | tail -n 20
  skip "$LANE/build.sh failed (its last lines above)"
fi
command -v qemu-system-x86_64 >/dev/null || skip "qemu-system-x86 is not installed (run $LANE/build.sh)"
command -v jq >/dev/null || skip "jq is not installed (scripts/install-deps.sh installs it)"
command -v modprobe >/dev/null || skip "modprobe is not installed (scripts/install-deps.sh installs kmod)"

share=$(mktemp -d)
trap 'rm -rf "$share"' EXIT
. scripts/vmlane-lib.sh
bins=$(cargo build -q -p netd -p netd-cni --bins --message-format=json |
  jq -r 'select(.reason == "compiler-artifact" and .executable != null) | .executable') || exit 1
for b in $bins; do
  case $(basename "$b") in netd | netctl | netd-cni) ship "$b" "$(basename "$b")" ;; esac
done
[ -x "$share/netd" ] && [ -x "$share/netctl" ] && [ -x "$share/netd-cni" ] || { echo "vm lane: netd binaries not built" >&2; exit 1; }
# In the guest the binaries are copied to tmpfs first: /share is 9p without a page
# cache, so every exec of netd-cni would page its text in over 9p again (seconds each).
{ echo '#!/bin/bash'; echo 'mkdir -p /tmp/bin && cp /share/netd /share/netctl /share/netd-cni /tmp/bin/ && cd /tmp/bin || exit 1'
  echo 'export NETD_TEST_BIN_DIR=/tmp/bin RUST_BACKTRACE=1 NETD_TEST_REQUIRE=1 NETD_TEST_LANE=vm'; echo 'rc=0'; } >"$share/run-tests.sh"
lane_modules "$share" run-tests.sh
for line in "${tests[@]}"; do
  # NAME [FILTER...]: a binary, and the tests of it the lane runs (all without filters).
  read -r t filters <<<"$line"
  exe=$(cargo test -q -p integration --test "$t" --no-run --message-format=json |
    jq -r 'select(.profile.test == true) | .executable // empty') || exit 1
  [ -n "$exe" ] || { echo "vm lane: no test binary for $t" >&2; exit 1; }
  ship "$exe" "$t"
  echo "cp /share/$t /tmp/bin/ && ./$t --test-threads=1 $filters ${NETD_VMLANE_TEST_ARGS:-} || rc=1" >>"$share/run-tests.sh"
done
echo 'exit $rc' >>"$share/run-tests.sh"
chmod +x "$share/run-tests.sh"
echo "vm lane: running ${tests[*]} in the guest"
# The lane's binaries run one after another in one boot: the IPVS conformance suite
# alone takes about 6 minutes, the whole list about 15 (docs/testing.md).
"$LANE/run.sh" "$share" run-tests.sh --timeout "${NETD_VMLANE_TIMEOUT:-1800}"
