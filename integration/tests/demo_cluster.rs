//! `make demo-cluster` (`scripts/demo-cluster.sh`): the voting app's five tiers on three
//! lab hosts over two overlay networks. It must print the reachability table with every
//! pair as expected (tiers sharing a network reach each other by name, the others do
//! not), exit 0, and leave no namespace of its lab behind.

use std::path::Path;
use std::process::Command;

use integration::harness::{bin, run, sh};
use integration::skip::{no_program, no_root};

#[test]
fn demo_cluster_prints_the_expected_table_and_removes_its_lab() {
    if no_root()
        || no_program("etcd", "etcd-server")
        || no_program("socat", "socat")
        || no_program("dig", "bind9-dnsutils")
        || no_program("jq", "jq")
    {
        return;
    }
    let lab = format!("ndt-demo{}", std::process::id());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/demo-cluster.sh");
    let o = run(Command::new(script)
        .env("LAB", &lab)
        .env("NETD_BIN", bin("netd").parent().expect("bin dir")));
    // Whatever happened, nothing of the lab may stay.
    let left = sh(&format!("ip netns list | grep -c '^{lab}-'")).stdout;
    if left.trim() != "0" {
        let _ = sh(&format!(
            "LAB={lab} {}/../scripts/lab.sh down",
            env!("CARGO_MANIFEST_DIR")
        ));
    }
    assert!(
        o.ok(),
        "demo-cluster failed ({}):\n{}{}",
        o.code,
        o.stdout,
        o.stderr
    );
    let rows: Vec<Vec<&str>> = o.stdout.lines().map(|l| l.split_whitespace().collect()).collect();
    let row = |name: &str| {
        rows.iter()
            .find(|r| r.first() == Some(&name))
            .unwrap_or_else(|| panic!("no row {name} in\n{}", o.stdout))
            .clone()
    };
    // Columns: vote redis worker db result.
    assert_eq!(row("vote"), ["vote", ".", "yes", "yes", "no", "no"]);
    assert_eq!(row("worker"), ["worker", "yes", "yes", ".", "yes", "yes"]);
    assert_eq!(row("result"), ["result", "no", "no", "yes", "yes", "."]);
    assert!(o.stdout.contains("demo-cluster: every pair as expected"));
    assert_eq!(left.trim(), "0", "lab namespaces left after the demo");
    assert!(!Path::new(&format!("/run/{lab}")).exists());
}
