#!/bin/bash
# Builds the netd-cni binary that is installed and benchmarked: release, statically linked
# and not position-independent, as Go builds the reference plugins. A runtime executes the
# plugin once per ADD/DEL/CHECK, so start-up counts: no dynamic loader (mapping libraries,
# binding symbols) and no PIE start-up relocations (more CPU in perf than all of main).
# Profile `cni` (Cargo.toml): release with fat LTO and one codegen unit; a smaller binary
# with fewer pages to fault in and tear down, and a faster operation. The figures are in
# docs/benchmarks.md.
#
# `--target` keeps RUSTFLAGS off build scripts and proc macros, which cannot be linked
# statically, and gives the static build a directory of its own
# (target/<host triple>/cni), so it never replaces target/release's binaries.
# Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
triple=$(rustc -vV | sed -n 's/^host: //p')
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static -C relocation-model=static" \
  cargo build --profile cni -q -p netd-cni --target "$triple" >&2
bin=$PWD/target/$triple/cni/netd-cni
# A static binary needs no shared library; and it must answer.
# (ldd fails on a non-PIE static binary, saying so.)
libs=$(ldd "$bin" 2>&1 || true)
if ! grep -Eq "statically linked|not a dynamic executable" <<<"$libs"; then
  echo "build-cni: $bin is not statically linked" >&2
  exit 1
fi
CNI_COMMAND=VERSION "$bin" </dev/null | grep -q '"supportedVersions"' || {
  echo "build-cni: $bin does not answer VERSION" >&2
  exit 1
}
echo "$bin"
