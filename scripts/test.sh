#!/bin/bash
# Runs every test: the pure layers (no root needed), the root integration suite on real
# namespaces, the CNI tests again with the shipped plugin, and the VM lane's tests.
# Prints one closing line, last, "N passed, N failed, N skipped" for the whole run (the
# lane's tests included), and exits non-zero when any test failed or could not run.
#
# A test that cannot run here (no root, a program or kernel feature missing) returns
# early after printing "skipped NAME: reason" (integration/src/skip.rs); those count as
# skipped, not passed, and their reasons are listed before the closing line (hence
# --show-output, which keeps passing tests' stdout). Under NETD_TEST_REQUIRE=1 (CI) a skip
# is a failure, except a test that skips here because the VM lane runs it, or skips in
# the lane because it runs here (docs/testing.md).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
out=$(mktemp)
trap 'rm -f "$log" "$out"' EXIT
status=0
# step NAME CMD...: runs CMD with its output on the terminal and in the log. A step that
# fails with no failing test to show for it (a build error, a crashed test binary, the
# lane's timeout) counts as one failure of its own, "suite failed (NAME): ...".
step() {
  local name=$1; shift
  "$@" 2>&1 | tee "$out"
  local rc=${PIPESTATUS[0]}
  cat "$out" >>"$log"
  [ "$rc" -eq 0 ] && return
  status=1
  tr -d '\r' <"$out" | grep -qE '^(test result: FAILED|suite failed )' ||
    echo "suite failed ($name): exit $rc and no failing test to show for it (a build error, a crash or a timeout: see above)" | tee -a "$log"
}
step "unit tests" cargo test --no-fail-fast --workspace --lib --bins
if [ "$(id -u)" -eq 0 ]; then
  step "integration tests" cargo test --no-fail-fast -p integration --tests -- --test-threads=2 --show-output
  # The CNI tests again with the plugin as `make install-cni` ships it (static, not
  # position-independent: scripts/build-cni.sh), next to the debug daemon.
  if shipped=$(./scripts/build-cni.sh) && cargo build -q -p netd --bins; then
    bins=$(mktemp -d)
    ln -s "$PWD/target/debug/netd" "$PWD/target/debug/netctl" "$bins/"
    ln -s "$shipped" "$bins/netd-cni"
    step "cni tests, shipped plugin" env NETD_TEST_BIN_DIR="$bins" \
      cargo test -p integration --test cni -- --test-threads=2 --show-output
    rm -rf "$bins"
  else
    echo "suite failed (cni tests, shipped plugin): building the shipped netd-cni failed" | tee -a "$log"
    status=1
  fi
  # Tests of kernel features this kernel lacks (integration/vmlane-tests), in the VM lane
  # (../shared/vmlane). When the lane cannot run it says why: a skip, or under
  # NETD_TEST_REQUIRE=1 a failure.
  step "vm lane" env NETD_VMLANE_TEST_ARGS=--show-output ./scripts/vmlane-test.sh
elif [ "${NETD_TEST_REQUIRE:-0}" = 1 ]; then
  echo "suite failed (integration tests): required but cannot run: they need root (sudo make test)" | tee -a "$log"
  status=1
else
  echo "suite skipped (integration tests): they need root (sudo make test)" | tee -a "$log"
fi
# The VM lane prints through QEMU's serial console, whose lines end in CR LF: the CR is
# dropped before matching. "skipped NAME: why" is one test that returned early, which
# libtest counted as passed; "suite skipped (WHAT): why" and "suite failed (WHAT): why"
# are a whole group that did not run or did not finish, counted as one skip or failure.
# A failed test's panic (in libtest's "failures:" section: its line and the three after
# it, the assertion and its values) is repeated above the closing line, so that the tail
# of a log says why a test failed.
awk '{ sub(/\r$/, "") }
     /^test result: / { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     /^skipped / { k++; why = why "  " $0 "\n" }
     /^suite skipped / { g++; why = why "  " $0 "\n" }
     /^suite failed / { sf++; bad = bad "  " $0 "\n" }
     /^failures:$/ { inf = 1 } /^(successes:$|test result: )/ { inf = 0 }
     inf && /^thread .* panicked at / { pn = 4 }
     pn > 0 { panics = panics "  " $0 "\n"; pn-- }
     END { if (k + g) printf "skipped, with their reasons:\n%s", why
           if (panics != "") printf "failed, where they panicked:\n%s", panics
           if (sf) printf "failed without a test result:\n%s", bad
           printf "%d passed, %d failed, %d skipped\n", p - k, f + sf, s + k + g
           exit (f + sf > 0) }' "$log" || status=1
exit $status
