//! The one way an integration test skips. A test that cannot run here (not root, a
//! program or a kernel feature missing) calls one of these and returns: it prints
//! `skipped NAME: REASON`, which `scripts/test.sh` counts and lists at the end.
//!
//! Under `NETD_TEST_REQUIRE=1` (CI: `.ci/run`; the VM lane) a skip is a failure: the test
//! panics with `NAME: required but cannot run: REASON`, so no test passes by not running.
//! Two skips stay allowed there, because the test does run, in the other place:
//! - [`skip_for_lane`]: this kernel lacks a feature the VM lane's kernel has, and the
//!   test's binary is listed in `integration/vmlane-tests`, so `scripts/vmlane-test.sh`
//!   runs it there (with `NETD_TEST_REQUIRE=1` as well, where the same skip fails).
//! - [`skip_in_lane`]: inside the VM lane (`NETD_TEST_LANE=vm`), a test about a kernel
//!   *without* a feature, which runs on the host.
//!
//! Test names are libtest's (each test runs on a thread named after it), so helpers that
//! skip on a test's behalf name the right test.

use std::fmt::Display;
use std::path::Path;

/// The test binaries `scripts/vmlane-test.sh` runs in the VM lane, one name a line.
const VMLANE_TESTS: &str = include_str!("../vmlane-tests");

/// Whether `NETD_TEST_REQUIRE=1`: every test must run.
pub fn required() -> bool {
    std::env::var("NETD_TEST_REQUIRE").is_ok_and(|v| v == "1")
}

/// Whether this process runs inside the VM lane (`scripts/vmlane-test.sh` sets
/// `NETD_TEST_LANE=vm` in the guest).
pub fn in_vm_lane() -> bool {
    std::env::var("NETD_TEST_LANE").is_ok_and(|v| v == "vm")
}

/// The running test's name: libtest names each test's thread after it.
pub fn this_test() -> String {
    std::thread::current()
        .name()
        .unwrap_or("(unnamed test)")
        .to_string()
}

/// This test binary's name without cargo's `-<hash>` suffix (`cni_vlan`).
pub fn test_binary() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            name.to_string()
        }
        _ => stem,
    }
}

/// Whether `binary` is one of the VM lane's test binaries.
///
/// Only a line with the binary's name alone counts: a line with test name filters
/// after it runs those tests only, so the binary's others may not skip for the lane.
pub fn runs_in_vm_lane(binary: &str) -> bool {
    VMLANE_TESTS
        .lines()
        .map(str::trim)
        .any(|l| !l.starts_with('#') && l == binary)
}

/// Skips test `name`: prints `skipped NAME: REASON` and returns true (so helpers can
/// write `!available && skip(..)`); the test then returns. Under `NETD_TEST_REQUIRE=1`
/// it panics instead.
#[track_caller]
pub fn skip(name: &str, reason: impl Display) -> bool {
    if required() {
        panic!("{name}: required but cannot run: {reason}");
    }
    println!("skipped {name}: {reason}");
    true
}

/// Skips a test this kernel cannot run that the VM lane runs: allowed under
/// `NETD_TEST_REQUIRE=1` only outside the lane and when the test's binary is in
/// `integration/vmlane-tests`.
#[track_caller]
pub fn skip_for_lane(name: &str, reason: impl Display) -> bool {
    let bin = test_binary();
    if required() && (in_vm_lane() || !runs_in_vm_lane(&bin)) {
        let why = if in_vm_lane() {
            "the VM lane must run it".to_string()
        } else {
            format!("its binary {bin} is not in integration/vmlane-tests")
        };
        panic!("{name}: required but cannot run: {reason} ({why})");
    }
    println!("skipped {name}: {reason}; it runs in the VM lane (scripts/vmlane-test.sh)");
    true
}

/// Skips, inside the VM lane, a test that needs the host's kernel (one without a
/// feature the lane has): allowed under `NETD_TEST_REQUIRE=1` only in the lane.
#[track_caller]
pub fn skip_in_lane(name: &str, reason: impl Display) -> bool {
    if required() && !in_vm_lane() {
        panic!("{name}: required but cannot run: {reason}");
    }
    println!("skipped {name}: {reason}; it runs outside the VM lane");
    true
}

/// Skips the running test when not root (the integration tests make namespaces):
/// true after `skip`, for `if no_root() { return; }`.
#[track_caller]
pub fn no_root() -> bool {
    !crate::ns::is_root() && skip(&this_test(), "needs root (sudo make test)")
}

/// Skips the running test when `program` is not on the PATH: true after `skip`, naming
/// the Debian package `scripts/install-deps.sh` installs it from.
#[track_caller]
pub fn no_program(program: &str, package: &str) -> bool {
    !on_path(program)
        && skip(
            &this_test(),
            format!("{program} is not installed (scripts/install-deps.sh installs {package})"),
        )
}

/// Skips the running test when `path` (a plugin or program at a fixed place) does not
/// exist; `hint` says where it comes from. True after `skip`.
#[track_caller]
pub fn no_file(path: &Path, hint: &str) -> bool {
    !path.exists() && skip(&this_test(), format!("{} is missing ({hint})", path.display()))
}

/// Whether an executable named `program` is in a directory of the PATH.
pub fn on_path(program: &str) -> bool {
    which(program) != Path::new(program)
}

/// `program`'s first executable on the PATH, or `program` itself (a path, or not found).
pub fn which(program: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH").unwrap_or_default();
    if program.contains('/') {
        return program.into();
    }
    std::env::split_paths(&path)
        .map(|d| d.join(program))
        .find(|f| std::fs::metadata(f).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0))
        .unwrap_or_else(|| program.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lane_list_names_cni_vlan() {
        assert!(runs_in_vm_lane("cni_vlan"));
        assert!(!runs_in_vm_lane("cni"));
        assert!(!runs_in_vm_lane("# cni_vlan"));
    }

    #[test]
    fn the_test_name_is_the_threads() {
        assert_eq!(this_test(), "skip::tests::the_test_name_is_the_threads");
    }

    #[test]
    fn sh_is_on_the_path() {
        assert!(on_path("sh"));
        assert!(!on_path("no-such-program-netd"));
    }
}
