#!/bin/bash
# Installs boringtun-cli (Cloudflare's userspace WireGuard, the peer bench/wireguard.sh
# measures netd's device against) into .tools/bin of this checkout. Idempotent: does
# nothing when that version is already there. Prints the binary's path.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=0.7.1
ROOT=$PWD/.tools
BIN=$ROOT/bin/boringtun-cli
if ! [ -x "$BIN" ] || ! grep -q "boringtun-cli v$VERSION" "$ROOT/.crates.toml" 2>/dev/null; then
  cargo install -q boringtun-cli --version "$VERSION" --locked --root "$ROOT" >&2
fi
echo "$BIN"
