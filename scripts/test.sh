#!/bin/bash
# Runs every test: the pure layers (no root needed), then the root integration suite on
# real namespaces. Prints one closing line "N passed, N failed, N skipped" for the run.
# A test that cannot run here (no root, a client or kernel feature missing) returns early
# after printing "skipped NAME: reason"; those count as skipped, not passed, and their
# reasons are listed at the end (hence --show-output, which keeps passing tests' stdout).
set -uo pipefail
cd "$(dirname "$0")/.."
log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --lib --bins 2>&1 | tee -a "$log" || status=1
if [ "$(id -u)" -eq 0 ]; then
  cargo test -p integration --tests -- --test-threads=2 --show-output 2>&1 | tee -a "$log" || status=1
  # The CNI tests again with the plugin as `make install-cni` ships it (static, not
  # position-independent: scripts/build-cni.sh), next to the debug daemon.
  if shipped=$(./scripts/build-cni.sh) && cargo build -q -p netd --bins; then
    bins=$(mktemp -d)
    ln -s "$PWD/target/debug/netd" "$PWD/target/debug/netctl" "$bins/"
    ln -s "$shipped" "$bins/netd-cni"
    NETD_TEST_BIN_DIR=$bins cargo test -p integration --test cni -- --test-threads=2 --show-output 2>&1 | tee -a "$log" || status=1
    rm -rf "$bins"
  else
    echo "building the shipped netd-cni failed" | tee -a "$log"
    status=1
  fi
  # Tests of kernel features this kernel lacks (bridge VLAN filtering), in the VM lane
  # (../shared/vmlane); skipped with a reason when the lane cannot run.
  NETD_VMLANE_TEST_ARGS=--show-output ./scripts/vmlane-test.sh 2>&1 | tee -a "$log" || status=1
else
  echo "integration tests skipped: they need root (sudo make test)"
fi
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     /^skipped/ { k++; why = why "  " $0 "\n" }
     END { if (k) printf "skipped here, with their reasons:\n%s", why
           printf "%d passed, %d failed, %d skipped\n", p - k, f, s + k }' "$log"
exit $status
