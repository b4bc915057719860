//! `vagrant/`: the 3-VM lab's Vagrantfile is valid (`vagrant validate`, no VM started,
//! no provider needed), and its provisioning script refuses bad arguments with one line
//! before it changes anything.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::harness::run;
use integration::skip::no_program;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../vagrant")
}

#[test]
fn the_vagrantfile_validates() {
    if no_program("vagrant", "vagrant") {
        return;
    }
    // Vagrant's own state (boxes, plugins, checkpoint) in a directory of the test's.
    let home = std::env::temp_dir().join(format!("netd-vagrant-{}", std::process::id()));
    for vms in ["3", "1"] {
        let o = run(Command::new("vagrant")
            .args(["validate", "--ignore-provider"])
            .current_dir(dir())
            .env("VAGRANT_HOME", &home)
            .env("VAGRANT_CHECKPOINT_DISABLE", "1")
            .env("NETD_VMS", vms));
        assert!(
            o.ok(),
            "vagrant validate (NETD_VMS={vms}): {}{}",
            o.stdout,
            o.stderr
        );
        assert!(o.stdout.contains("validated successfully"), "{}", o.stdout);
    }
    let o = run(Command::new("vagrant")
        .args(["validate", "--ignore-provider"])
        .current_dir(dir())
        .env("VAGRANT_HOME", &home)
        .env("VAGRANT_CHECKPOINT_DISABLE", "1")
        .env("NETD_VMS", "12"));
    assert!(!o.ok(), "NETD_VMS=12 validated");
    assert!(o.stderr.contains("NETD_VMS must be 1-9"), "{}", o.stderr);
    let _ = std::fs::remove_dir_all(&home);
}

#[test]
fn provision_refuses_bad_arguments_in_one_line() {
    for args in [
        &[][..],
        &["h1", "192.168.56.11"][..],
        &["H1", "192.168.56.11", "192.168.56.11"][..],
        &["h1", "not-an-ip", "192.168.56.11"][..],
        &["h1", "192.168.56.11", "192.168.56"][..],
    ] {
        let o = run(Command::new(dir().join("provision.sh")).args(args));
        assert_eq!(o.code, 2, "{args:?}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "{args:?}: {}", o.stderr);
        assert!(o.stderr.starts_with("provision: usage:"), "{}", o.stderr);
        assert!(o.stdout.is_empty(), "{args:?} did something: {}", o.stdout);
    }
}
