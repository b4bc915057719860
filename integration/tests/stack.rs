//! `netd up examples/voting-app.toml --check` in a host namespace of its own: it starts
//! an in-process daemon, brings the stack up, measures every expected reachability and
//! isolation with real connections, and tears everything down.

use std::process::Command;

use integration::harness::{bin, run, Host};
use integration::skip::no_root;

#[test]
fn voting_app_check_passes_and_leaves_nothing() {
    if no_root() {
        return;
    }
    // A host with a daemon already serving: `netd up` must use it.
    let h = Host::new();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voting-app.toml");
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .arg("up")
        .arg(&example)
        .arg("--check")
        .args(h.dir_args()));
    assert!(o.ok(), "netd up --check failed:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("check passed"), "{}", o.stdout);
    assert!(
        o.stdout.contains("http://127.0.0.1:8080") && o.stdout.contains("-> vote-1"),
        "{}",
        o.stdout
    );
    // Isolation is part of what was measured: vote cannot reach db.
    let row = o
        .stdout
        .lines()
        .find(|l| l.starts_with("vote-1 "))
        .unwrap_or_default();
    assert!(row.contains("--") && row.contains("ok"), "{row}");
    // Names: worker finds redis and db by name (and reaches them); vote does not see db.
    let names = o.stdout.split("names via 127.0.0.11").nth(1).unwrap_or_default();
    let cols: Vec<&str> = names
        .lines()
        .nth(1)
        .unwrap_or_default()
        .split_whitespace()
        .collect();
    let cell = |from: &str, to: &str| -> String {
        let i = cols.iter().position(|c| *c == to).expect("column") - 2;
        let row = names
            .lines()
            .find(|l| l.starts_with(&format!("{from} ")))
            .unwrap_or_default();
        row.split_whitespace().nth(i).unwrap_or_default().to_string()
    };
    assert_eq!(cell("worker", "redis"), "ok", "{names}");
    assert_eq!(cell("worker", "db"), "ok", "{names}");
    assert_eq!(cell("vote-1", "redis"), "ok", "{names}");
    assert_eq!(cell("vote-1", "db"), "--", "{names}");
    assert_eq!(cell("result", "vote"), "--", "{names}");
    // Nothing left: no networks, sandboxes, netd links or responders.
    let c = h.client();
    assert_eq!(c.get("/v1/networks").expect("networks"), serde_json::json!([]));
    assert_eq!(c.get("/v1/sandboxes").expect("sandboxes"), serde_json::json!([]));
    assert!(!h.sh("ip -d link show").stdout.contains("netd:"));
}

#[test]
fn bad_stack_file_is_refused_before_anything_is_made() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let dir = h.base.join("stack");
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join("bad.toml");
    std::fs::write(
        &f,
        "[[network]]\nname = \"a\"\n[[sandbox]]\nname = \"x\"\nnetworks = [\"missing\"]\n",
    )
    .expect("write");
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .args(["up"])
        .arg(&f)
        .arg("--check")
        .args(h.dir_args()));
    assert!(!o.ok());
    assert!(o.stderr.contains("does not declare"), "{}", o.stderr);
    assert_eq!(
        h.client().get("/v1/networks").expect("networks"),
        serde_json::json!([])
    );
}

#[test]
fn voting_app_check_with_in_process_daemon() {
    if no_root() {
        return;
    }
    // No daemon serving: `netd up` starts one in-process on the given dirs.
    let h = Host::bare();
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voting-app.toml");
    let o = run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .arg("up")
        .arg(&example)
        .arg("--check")
        .args(h.dir_args()));
    assert!(o.ok(), "netd up --check failed:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("check passed"), "{}", o.stdout);
    // The in-process daemon is gone with it, and so is everything the stack made.
    assert!(h.client().get("/v1/health").is_err(), "daemon still answering");
    assert!(!h.sh("ip -d link show").stdout.contains("netd:"));
    assert_eq!(h.netns_files(), Vec::<String>::new());
}
