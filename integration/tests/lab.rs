//! `scripts/lab.sh` with a lab name (`LAB=NAME`): a lab of that name comes up beside any
//! other (the lead's `ndlab` benchmark, another test's), its hosts reach each other over
//! an overlay network, and `down` removes its own namespaces and run dir only, not those
//! of a lab whose name starts with this one's. A bad name is one line and makes nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

use integration::cluster::eventually;
use integration::harness::{bin, ping_from, run, sh, Out};
use integration::skip::{no_program, no_root};

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/lab.sh")
}

/// `LAB=lab scripts/lab.sh ARGS` with the tested binaries.
fn lab(name: &str, args: &[&str]) -> Out {
    let dir = bin("netd").parent().expect("bin dir").to_path_buf();
    run(Command::new(script())
        .args(args)
        .env("LAB", name)
        .env("NETD_BIN", dir))
}

fn namespaces() -> Vec<String> {
    sh("ip netns list")
        .stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

/// Takes the lab down (its recorded PIDs only) and deletes the decoy, also on panic.
struct Guard {
    name: String,
    decoy: String,
}

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = lab(&self.name, &["down"]);
        let _ = sh(&format!("ip netns del {} 2>/dev/null", self.decoy));
    }
}

#[test]
fn a_named_lab_lives_beside_others_and_down_removes_only_its_own() {
    if no_root() || no_program("etcd", "etcd-server") {
        return;
    }
    let name = format!("ndt-lab{}", std::process::id());
    // A namespace that looks like another lab's host ("NAME-x" is a lab of its own).
    let decoy = format!("{name}-x-h1");
    let _g = Guard {
        name: name.clone(),
        decoy: decoy.clone(),
    };
    assert!(sh(&format!("ip netns add {decoy}")).ok());

    let o = lab(&name, &["up", "2"]);
    assert!(o.ok(), "lab up: {}{}", o.stdout, o.stderr);
    let ns = namespaces();
    for n in ["ul", "h1", "h2"] {
        assert!(ns.contains(&format!("{name}-{n}")), "{name}-{n} missing: {ns:?}");
    }
    let run_dir = PathBuf::from(format!("/run/{name}"));
    assert!(run_dir.join("h2/netd.sock").exists());

    // The lab works: an overlay network made on h1, a sandbox on each host, a ping across.
    let o = lab(&name, &["ctl", "1", "network", "create", "-d", "overlay", "w"]);
    assert!(o.ok(), "network create: {}", o.stderr);
    assert!(eventually(10, || lab(
        &name,
        &["ctl", "2", "network", "ls", "-q"]
    )
    .stdout
    .lines()
    .any(|l| l == "w")));
    for (i, s) in [("1", "a"), ("2", "b")] {
        let o = lab(&name, &["ctl", i, "sandbox", "create", "--network", "w", s]);
        assert!(o.ok(), "sandbox {s}: {}", o.stderr);
    }
    let inspect = lab(&name, &["ctl", "1", "sandbox", "inspect", "a"]).stdout;
    let v: serde_json::Value = serde_json::from_str(&inspect).expect("inspect json");
    let ip = v[0]["endpoints"][0]["ipv4"]
        .as_str()
        .and_then(|a| a.split('/').next())
        .expect("a's address")
        .to_string();
    assert!(
        eventually(10, || ping_from(&run_dir.join("h2/netns/b"), None, &ip)),
        "b (h2) does not reach a (h1) at {ip}"
    );
    // `sh I CMD` runs in this lab's host I.
    let o = lab(&name, &["sh", "2", "ip", "-br", "addr", "show", "eth0"]);
    assert!(o.stdout.contains("10.251.0.2/24"), "{}", o.stdout);

    let o = lab(&name, &["down"]);
    assert!(o.ok(), "lab down: {}", o.stderr);
    let ns = namespaces();
    assert!(
        !ns.iter()
            .any(|n| n.starts_with(&format!("{name}-")) && n != &decoy),
        "lab namespaces left: {ns:?}"
    );
    assert!(
        ns.contains(&decoy),
        "down removed another lab's namespace {decoy}"
    );
    assert!(!run_dir.exists(), "{} left", run_dir.display());
}

#[test]
fn a_bad_lab_name_is_one_line_and_makes_nothing() {
    if no_root() {
        return;
    }
    for bad in ["Upper", "-lead", "a/b", "x y", &"n".repeat(30)] {
        let o = lab(bad, &["up", "1"]);
        assert_eq!(o.code, 2, "LAB={bad}: {}", o.stderr);
        assert_eq!(o.stderr.lines().count(), 1, "LAB={bad}: {}", o.stderr);
        assert!(o.stderr.starts_with("lab: LAB must be"), "{}", o.stderr);
        // Only this lab's names: the other test of this file makes a lab meanwhile.
        let made: Vec<String> = namespaces().into_iter().filter(|n| n.starts_with(bad)).collect();
        assert!(made.is_empty(), "LAB={bad} made namespaces {made:?}");
        assert!(
            !std::path::Path::new("/run").join(bad).exists(),
            "LAB={bad} made a run dir"
        );
    }
}
