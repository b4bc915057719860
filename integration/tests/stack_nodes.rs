//! One stack file for a cluster (`node = "hI"` per sandbox, an overlay network): one
//! `netd up -d` on any node makes that node's sandboxes and publishes the file; every
//! other node's daemon makes its own part, and the `up` waits for them and names a node
//! that failed. The sandboxes reach each other across nodes by name. An unknown node is
//! one line and makes nothing (not even the overlay network). `netd down` on any node
//! removes the stack from all; the overlay network stays until `netctl network rm`.

use std::path::PathBuf;
use std::process::Command;

use integration::cluster::{eventually, Cluster};
use integration::dig::dig;
use integration::harness::{bin, run, tcp, Host, Out};
use integration::skip::{no_program, no_root};

const FILE: &str = r#"
name = "vote"
[[network]]
name = "ov"
driver = "overlay"
subnet = "10.92.0.0/24"
[[sandbox]]
name = "web"
node = "h1"
networks = ["ov"]
tcp = [80]
[[sandbox]]
name = "db"
node = "h2"
networks = ["ov"]
tcp = [5432]
"#;

fn netd(h: &Host, args: &[&str]) -> Out {
    run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .args(args)
        .args(h.dir_args()))
}

fn write(dir: &std::path::Path, name: &str, text: &str) -> String {
    let p: PathBuf = dir.join(name);
    std::fs::write(&p, text).expect("write stack file");
    p.display().to_string()
}

fn sandboxes(h: &Host) -> Vec<String> {
    h.ctl(&["sandbox", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

fn networks(h: &Host) -> Vec<String> {
    h.ctl(&["network", "ls", "-q"])
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn one_stack_file_places_sandboxes_on_their_nodes() {
    if no_root() || no_program("etcd", "etcd-server") || no_program("dig", "bind9-dnsutils") {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2, h3) = (c.node(0), c.node(1), c.node(2));
    let dir = h1.base.join("stacks");
    std::fs::create_dir_all(&dir).unwrap();
    let good = write(&dir, "vote.toml", FILE);

    // A node nobody runs: one line, and nothing made anywhere.
    let bad = write(&dir, "bad.toml", &FILE.replace("node = \"h2\"", "node = \"h9\""));
    let o = netd(h1, &["up", "-d", &bad]);
    assert!(!o.ok(), "unknown node accepted: {}", o.stdout);
    assert_eq!(
        o.stderr.trim(),
        "netd: stack vote: sandbox db: node h9 is not in the cluster (nodes: h1, h2, h3)"
    );
    for h in [h1, h2, h3] {
        assert!(sandboxes(h).is_empty() && networks(h).is_empty(), "{}", h.log());
    }

    // A node whose part fails (a hand-made sandbox holds the name there): `up` on h1
    // names the node and why, and exits non-zero.
    let o = h2.netctl(&["sandbox", "create", "db"]);
    assert!(o.ok(), "{}", o.stderr);
    let o = netd(h1, &["up", "-d", &good]);
    assert!(!o.ok(), "a failed node's part accepted: {}", o.stderr);
    assert!(
        o.stderr.contains("node h2 failed:") && o.stderr.contains("not made on every node"),
        "{}",
        o.stderr
    );
    h2.ctl(&["sandbox", "rm", "db"]);

    // One `up` on h1 brings the whole stack up: h1 makes web and publishes the file,
    // h2's daemon makes db, h3 (named by no sandbox) makes nothing.
    let o = netd(h1, &["up", "-d", &good]);
    assert!(o.ok(), "up on h1: {}{}", o.stdout, o.stderr);
    assert!(
        o.stderr
            .contains("sandbox db is for node h2, skipped here (node h2 makes it)"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("node h2 made its part (db)"), "{}", o.stderr);
    assert_eq!(sandboxes(h1), ["web"]);
    assert_eq!(sandboxes(h2), ["db"]);
    assert!(sandboxes(h3).is_empty());

    // Across nodes by name: db (h2) resolves web (h1) and reaches its responder, and back.
    let web_ip = h1.ip("web", "ov");
    let db_ip = h2.ip("db", "ov");
    assert!(
        eventually(10, || dig(h2, "db", "web")
            .1
            .iter()
            .any(|a| a.ends_with(&format!("A {web_ip}")))),
        "db does not resolve web: {:?}",
        dig(h2, "db", "web")
    );
    assert!(
        eventually(10, || tcp(Some(&h2.sb("db")), &format!("{web_ip}:80"), 1000)
            .as_deref()
            == Some("web")),
        "db does not reach web's responder"
    );
    assert!(
        eventually(10, || tcp(Some(&h1.sb("web")), &format!("{db_ip}:5432"), 1000)
            .as_deref()
            == Some("db")),
        "web does not reach db's responder"
    );

    // A second `up` keeps what each node has: same sandboxes, same addresses.
    let o = netd(h1, &["up", "-d", &good]);
    assert!(
        o.ok() && o.stderr.contains("already as the file says, kept"),
        "{}",
        o.stderr
    );
    assert!(o.stderr.contains("node h2 made its part (db)"), "{}", o.stderr);
    assert_eq!((h1.ip("web", "ov"), h2.ip("db", "ov")), (web_ip, db_ip));

    // `down` on h3, which has no part, removes the stack from every node; the overlay
    // network is the cluster's and stays until `network rm`.
    let o = netd(h3, &["down", "-p", "vote"]);
    assert!(o.ok(), "down on h3: {}", o.stderr);
    assert!(o.stderr.contains("every node removed its part"), "{}", o.stderr);
    assert!(sandboxes(h1).is_empty() && sandboxes(h2).is_empty());
    for h in [h1, h2] {
        let o = netd(h, &["ls"]);
        assert!(!o.stdout.contains("vote"), "stack left on a node: {}", o.stdout);
    }
    let o = netd(h1, &["down", "-p", "vote"]);
    assert!(o.ok() && o.stderr.contains("nothing to remove"), "{}", o.stderr);
    // The agents drop the endpoints' records at their next look (every 100 ms).
    assert!(
        eventually(10, || h3.netctl(&["network", "rm", "ov"]).ok()),
        "{}",
        h3.netctl(&["network", "rm", "ov"]).stderr
    );
    for h in [h1, h2, h3] {
        assert!(
            eventually(10, || networks(h).is_empty()),
            "ov left on a node: {:?}",
            networks(h)
        );
    }
}

#[test]
fn a_placed_stack_on_a_daemon_without_cluster_is_one_line() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let f = h.base.join("vote.toml");
    std::fs::write(&f, FILE).unwrap();
    let o = netd(&h, &["up", "-d", f.to_str().unwrap()]);
    assert!(!o.ok());
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert!(
        o.stderr
            .contains("sandbox web is placed on a node, but this netd is not in a cluster"),
        "{}",
        o.stderr
    );
    assert!(sandboxes(&h).is_empty() && networks(&h).is_empty());
}

const SHOP: &str = r#"
name = "shop"
[[network]]
name = "ov2"
driver = "overlay"
subnet = "10.93.0.0/24"
[[sandbox]]
name = "client"
node = "h3"
networks = ["ov2"]
[[service]]
name = "api"
replicas = 2
nodes = ["h1", "h2"]
networks = ["ov2"]
tcp = [80]
publish = ["8080:80"]
"#;

/// A `[[service]]` placed on nodes (`nodes = [...]`, replicas in turn) is the cluster's:
/// `netd up --check` on h3, which has no replica, brings up the replicas on h1 and h2
/// through their daemons, and every replica answers the name, `tasks.api` and the
/// published port on h3 (the routing mesh). The run then removes the stack everywhere.
#[test]
fn a_service_placed_on_nodes_balances_over_them() {
    if no_root() || no_program("etcd", "etcd-server") {
        return;
    }
    let c = Cluster::new(3);
    let (h1, h2, h3) = (c.node(0), c.node(1), c.node(2));
    let dir = h3.base.join("stacks");
    std::fs::create_dir_all(&dir).unwrap();

    // A placed service on a network that is not overlay: one line, nothing made.
    let bad = SHOP
        .replace("driver = \"overlay\"\n", "")
        .replace("[[sandbox]]", "[[network]]\nname = \"br\"\n[[sandbox]]");
    let bad = write(
        &dir,
        "bad.toml",
        &bad.replace("networks = [\"ov2\"]\ntcp", "networks = [\"br\"]\ntcp"),
    );
    let o = netd(h3, &["up", "-d", &bad]);
    assert!(!o.ok(), "{}", o.stdout);
    assert!(
        o.stderr.trim().ends_with(
            "service api: network br is not an overlay network; a service of a stack placed on nodes is the cluster's, on overlay networks only"
        ),
        "{}",
        o.stderr
    );
    for h in [h1, h2, h3] {
        assert!(sandboxes(h).is_empty(), "{}", h.log());
    }

    let good = write(&dir, "shop.toml", SHOP);
    let o = netd(h3, &["up", "--check", &good]);
    assert!(o.ok(), "up --check on h3:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stderr.contains("node h1 made its part (api-1)"), "{}", o.stderr);
    assert!(o.stderr.contains("node h2 made its part (api-2)"), "{}", o.stderr);
    let lines: Vec<&str> = o.stdout.lines().filter(|l| l.contains(" api ")).collect();
    assert!(lines.len() >= 3, "{}", o.stdout);
    for l in &lines {
        assert!(
            l.trim_start().starts_with("ok") && l.contains("answered by api-1, api-2"),
            "{l}\n{}",
            o.stdout
        );
    }
    assert!(o.stdout.contains("127.0.0.1:8080"), "{}", o.stdout);

    // Gone everywhere: sandboxes, the cluster service, the stack record.
    for h in [h1, h2, h3] {
        assert!(sandboxes(h).is_empty(), "left on a node: {:?}", sandboxes(h));
        assert!(
            eventually(10, || h.ctl(&["service", "ls", "-q"]).trim().is_empty()),
            "service left: {}",
            h.ctl(&["service", "ls"])
        );
    }
    assert!(!h1.netctl(&["network", "rm", "ov2"]).stderr.contains("endpoint"));
}
