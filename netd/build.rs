//! Links libnftables (Debian: libnftables-dev), which `kernel::nft` calls in-process.

fn main() {
    println!("cargo:rustc-link-lib=nftables");
    println!("cargo:rerun-if-changed=build.rs");
}
