//! Compiles the eBPF programs of `ebpf/` (one C file per attach point) with clang into
//! `OUT_DIR`, where `kernel::bpf` embeds them. clang, libbpf-dev (bpf_helpers.h) and the
//! kernel UAPI headers come from `scripts/install-deps.sh`.

use std::path::PathBuf;
use std::process::Command;

const PROGRAMS: &[&str] = &[
    "connect4",
    "sendmsg4",
    "recvmsg4",
    "getpeername4",
    "connect6",
    "sendmsg6",
    "recvmsg6",
    "getpeername6",
    "tc_nodeport4",
];

fn main() {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("manifest dir"))
        .join("..")
        .join("ebpf");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR"));
    println!("cargo:rerun-if-changed={}", root.display());
    println!("cargo:rerun-if-env-changed=NETD_CLANG");
    let clang = std::env::var("NETD_CLANG").unwrap_or_else(|_| "clang".into());
    // asm/types.h lives in the multiarch include dir on Debian; clang -target bpf
    // does not look there by itself.
    let multiarch = Command::new("gcc")
        .arg("-print-multiarch")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "x86_64-linux-gnu".into());
    for p in PROGRAMS {
        let src = root.join(format!("{p}.c"));
        let obj = out.join(format!("{p}.o"));
        let st = Command::new(&clang)
            .args(["-O2", "-g", "-Wall", "-Werror", "-target", "bpf"])
            .arg(format!("-I{}", root.join("include").display()))
            .arg(format!("-I/usr/include/{multiarch}"))
            .arg("-c")
            .arg(&src)
            .arg("-o")
            .arg(&obj)
            .status();
        match st {
            Ok(s) if s.success() => {}
            Ok(s) => panic!("clang {} failed ({s})", src.display()),
            Err(e) => panic!(
                "cannot run {clang} for the eBPF programs ({e}): run scripts/install-deps.sh (clang, libbpf-dev)"
            ),
        }
    }
}
