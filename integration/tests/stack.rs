//! Stacks, each test in a host namespace of its own: `netd up examples/voting-app.toml
//! --check` (with a daemon serving, and with one in-process) measures every expected
//! reachability and isolation and tears everything down; a second `up` after a `kill
//! -9`ed one and an `up` of a changed file converge; `up -d`, `ps`, `ls`, `down`; other
//! stacks' and hand-made objects are never touched; Ctrl-C with stdout and stderr
//! closed pipes still removes everything.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use integration::harness::{bin, run, tcp, Host, Out};
use integration::skip::no_root;
use serde_json::Value;

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
    // vote's two replicas behind one VIP and one published port: each way in reached both.
    let lb = o
        .stdout
        .split("services (every replica")
        .nth(1)
        .unwrap_or_default();
    for way in ["name -> VIP", "tasks.vote", "published http://127.0.0.1:8080"] {
        let line = lb.lines().find(|l| l.contains(way)).unwrap_or_default();
        assert!(
            line.trim_start().starts_with("ok") && line.contains("vote-1, vote-2"),
            "{way}: {line}\n{}",
            o.stdout
        );
    }
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

/// `netd ARGS... <host dirs>` inside the host namespace.
fn netd(h: &Host, args: &[&str]) -> Out {
    run(Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .args(args)
        .args(h.dir_args()))
}

/// Like `netd`, asserting success; returns stdout.
fn netd_ok(h: &Host, args: &[&str]) -> String {
    let o = netd(h, args);
    assert!(o.ok(), "netd {args:?} failed:\n{}\n{}", o.stdout, o.stderr);
    o.stdout
}

/// A foreground `netd up FILE` with stdout piped (nsenter execs netd: same PID).
fn spawn_up(h: &Host, file: &Path) -> Child {
    let log = std::fs::File::create(h.base.join("up.log")).expect("log");
    Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .arg("up")
        .arg(file)
        .args(h.dir_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .expect("spawn netd up")
}

fn write_stack(h: &Host, name: &str, text: &str) -> PathBuf {
    let dir = h.base.join("stacks");
    std::fs::create_dir_all(&dir).expect("dir");
    let f = dir.join(name);
    std::fs::write(&f, text).expect("write stack");
    f
}

fn voting_app() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/voting-app.toml")
}

/// PIDs of `netd responder` processes serving sandboxes of this host (by their
/// `--netns` under the host's netns dir).
fn responders(h: &Host) -> Vec<u32> {
    let dir = h.netns_dir().display().to_string();
    let mut v = Vec::new();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<String> = cmd
            .split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let is_ours = args.iter().any(|a| a == "responder") && args.iter().any(|a| a.starts_with(&dir));
        // A zombie has an empty cmdline; state is checked anyway.
        let zombie = std::fs::read_to_string(e.path().join("stat"))
            .map(|s| s.rsplit(')').next().unwrap_or("").trim_start().starts_with('Z'))
            .unwrap_or(true);
        if is_ours && !zombie {
            v.push(pid);
        }
    }
    v
}

fn names(v: &Value) -> Vec<String> {
    let mut n: Vec<String> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|o| o["name"].as_str().unwrap_or_default().to_string())
        .collect();
    n.sort();
    n
}

/// Nothing of any stack left on the host: no objects, links, namespaces, responders,
/// nft elements, leases.
fn assert_empty(h: &Host) {
    let c = h.client();
    assert_eq!(c.get("/v1/networks").expect("networks"), serde_json::json!([]));
    assert_eq!(c.get("/v1/sandboxes").expect("sandboxes"), serde_json::json!([]));
    h.assert_consistent();
    assert!(!h.sh("ip -d link show").stdout.contains("netd:"));
    assert_eq!(h.netns_files(), Vec::<String>::new());
    assert_eq!(responders(h), Vec::<u32>::new(), "responders left");
}

#[test]
fn second_up_after_a_killed_one_converges() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let mut first = spawn_up(&h, &voting_app());
    // Kill it as soon as the stack is partly made: some objects exist, not all.
    let c = h.client();
    let t0 = Instant::now();
    loop {
        let n = c.get("/v1/sandboxes").expect("sandboxes");
        if !n.as_array().expect("array").is_empty() {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(60), "netd up made nothing");
        std::thread::sleep(Duration::from_millis(5));
    }
    first.kill().expect("kill -9 netd up");
    let _ = first.wait();
    let left = c.get("/v1/networks").expect("networks");
    assert!(
        !names(&left).is_empty(),
        "the killed run left nothing to converge from"
    );
    // The second run completes the stack (no "already exists"), checks it, removes it.
    let o = netd(&h, &["up", voting_app().to_str().expect("path"), "--check"]);
    assert!(o.ok(), "second netd up failed:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("check passed"), "{}", o.stdout);
    assert!(o.stderr.contains("kept"), "nothing was reused: {}", o.stderr);
    assert_empty(&h);
}

const V1: &str = r#"
name = "shop"
[[network]]
name = "sfront"
subnet = "10.71.0.0/24"
[[network]]
name = "sback"
subnet = "10.72.0.0/24"
[[sandbox]]
name = "sweb"
networks = ["sfront"]
tcp = [80]
[[sandbox]]
name = "scache"
networks = ["sfront"]
tcp = [6379]
[[sandbox]]
name = "sdb"
networks = ["sback"]
tcp = [5432]
"#;

/// V1 with `scache` gone, `sfront` on another subnet (so `sweb` must move) and a new
/// network `sextra` that `sdb` joins.
const V2: &str = r#"
name = "shop"
[[network]]
name = "sfront"
subnet = "10.73.0.0/24"
[[network]]
name = "sback"
subnet = "10.72.0.0/24"
[[network]]
name = "sextra"
[[sandbox]]
name = "sweb"
networks = ["sfront"]
tcp = [80]
[[sandbox]]
name = "sdb"
networks = ["sback", "sextra"]
tcp = [5432]
"#;

#[test]
fn a_changed_file_converges_with_nothing_stale() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let f = write_stack(&h, "shop.toml", V1);
    netd_ok(&h, &["up", "-d", f.to_str().expect("path"), "--check"]);
    let c = h.client();
    assert_eq!(
        names(&c.get("/v1/sandboxes").expect("sbs")),
        ["scache", "sdb", "sweb"]
    );
    let cache_responders = responders(&h);
    assert_eq!(cache_responders.len(), 3, "one responder per sandbox");
    let web_id = h.sandbox("sweb")["id"].clone();
    // Same file again: nothing changes (same sandbox ids, same responders).
    let o = netd(&h, &["up", "-d", f.to_str().expect("path")]);
    assert!(o.ok(), "{}", o.stderr);
    assert!(
        !o.stderr.contains("created") && !o.stderr.contains("removed"),
        "{}",
        o.stderr
    );
    assert_eq!(h.sandbox("sweb")["id"], web_id);
    assert_eq!(responders(&h), cache_responders);

    std::fs::write(&f, V2).expect("write v2");
    let o = netd(&h, &["up", "-d", f.to_str().expect("path"), "--check"]);
    assert!(o.ok(), "converging to v2 failed:\n{}\n{}", o.stdout, o.stderr);
    assert!(o.stdout.contains("check passed"), "{}", o.stdout);
    assert_eq!(names(&c.get("/v1/sandboxes").expect("sbs")), ["sdb", "sweb"]);
    assert_eq!(
        names(&c.get("/v1/networks").expect("nets")),
        ["sback", "sextra", "sfront"]
    );
    // sweb moved to the new subnet; sdb has both networks; scache's responder is gone.
    assert!(
        h.ip("sweb", "sfront").starts_with("10.73.0."),
        "{}",
        h.sandbox("sweb")
    );
    assert_ne!(h.sandbox("sweb")["id"], web_id, "sweb was not recreated");
    h.ip("sdb", "sextra");
    assert_eq!(responders(&h).len(), 2, "a responder per sandbox, none stale");
    h.assert_consistent();
    let ruleset = h.sh("nft list ruleset").stdout;
    assert!(
        !ruleset.contains("10.71.0."),
        "old subnet still in nft: {ruleset}"
    );
    netd_ok(&h, &["down", f.to_str().expect("path")]);
    assert_empty(&h);
}

#[test]
fn detached_stack_is_listed_and_removed_by_down() {
    if no_root() {
        return;
    }
    // -d needs a real daemon: without one it says how to start one and makes nothing.
    let bare = Host::bare();
    let o = netd(&bare, &["up", "-d", voting_app().to_str().expect("path")]);
    assert!(!o.ok());
    assert!(o.stderr.contains("netd daemon"), "{}", o.stderr);
    assert_eq!(o.stderr.trim().lines().count(), 1, "{}", o.stderr);
    assert_eq!(bare.netns_files(), Vec::<String>::new());
    drop(bare);

    let h = Host::new();
    let out = netd_ok(
        &h,
        &["up", "-d", voting_app().to_str().expect("path"), "-p", "vote"],
    );
    assert!(out.contains("stack vote is up"), "{out}");
    // `netd up -d` has returned; the stack and its responders are still serving.
    assert_eq!(responders(&h).len(), 6);
    assert_eq!(
        tcp(
            Some(&h.sb("worker")),
            &format!("{}:6379", h.ip("redis", "frontend")),
            2000
        )
        .as_deref(),
        Some("redis")
    );
    let ls: Value = serde_json::from_str(&netd_ok(&h, &["ls", "--json"])).expect("ls --json");
    assert_eq!(
        ls,
        serde_json::json!([{"name": "vote", "networks": 2, "sandboxes": 6, "responders": 6}])
    );
    assert!(netd_ok(&h, &["ls"]).lines().any(|l| l.starts_with("vote ")));
    let ps: Value = serde_json::from_str(&netd_ok(&h, &["ps", "-p", "vote", "--json"])).expect("ps --json");
    assert_eq!(ps["stack"], "vote");
    assert_eq!(names(&ps["networks"]), ["backend", "frontend"]);
    assert_eq!(
        names(&ps["sandboxes"]),
        ["db", "redis", "result", "vote-1", "vote-2", "worker"]
    );
    for s in ps["sandboxes"].as_array().expect("sandboxes") {
        assert_eq!(s["responder"]["alive"], true, "{s}");
    }
    let text = netd_ok(&h, &["ps", "-p", "vote"]);
    assert!(
        text.contains("responder pid") && text.contains("frontend="),
        "{text}"
    );
    // ps/down by file need the same name: the file says voting-app, not vote.
    let o = netd(&h, &["ps", voting_app().to_str().expect("path"), "--json"]);
    assert!(o.ok());
    let other: Value = serde_json::from_str(&o.stdout).expect("json");
    assert_eq!(other["sandboxes"], serde_json::json!([]));
    netd_ok(&h, &["down", "-p", "vote"]);
    assert_empty(&h);
    assert_eq!(netd_ok(&h, &["ls", "--json"]).trim(), "[]");
    assert!(!h.base.join("state/stacks/vote.json").exists(), "record left");
}

const OTHER: &str = r#"
[[network]]
name = "onet"
[[sandbox]]
name = "osb"
networks = ["onet"]
tcp = [80]
"#;

#[test]
fn another_stacks_and_hand_made_objects_are_untouched() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let other = write_stack(&h, "other.toml", OTHER);
    netd_ok(&h, &["up", "-d", other.to_str().expect("path")]);
    h.ctl(&["network", "create", "manual", "--subnet", "10.77.0.0/24"]);
    h.ctl(&["sandbox", "create", "handmade", "--network", "manual"]);
    let before = h.snapshot();
    // A stack whose names collide: with the other stack's network, then with the
    // hand-made sandbox. Each is refused with one line, and nothing changes.
    for (file, clash) in [
        ("clash1.toml", "[[network]]\nname = \"onet\"\n"),
        (
            "clash2.toml",
            "[[network]]\nname = \"cnet\"\n[[sandbox]]\nname = \"handmade\"\nnetworks = [\"cnet\"]\n",
        ),
    ] {
        let f = write_stack(&h, file, clash);
        for detach in [true, false] {
            let mut args = vec!["up", f.to_str().expect("path"), "--check"];
            if detach {
                args.push("-d");
            }
            let o = netd(&h, &args);
            assert!(!o.ok(), "{file} was accepted");
            assert!(o.stderr.contains("already exists"), "{}", o.stderr);
            assert_eq!(h.snapshot(), before, "a refused stack changed something");
        }
    }
    // A third stack next to them, then removed: the others stay as they were.
    let vote = voting_app();
    netd_ok(&h, &["up", "-d", vote.to_str().expect("path")]);
    netd_ok(&h, &["down", vote.to_str().expect("path")]);
    assert_eq!(h.snapshot(), before);
    assert_eq!(responders(&h).len(), 1, "the other stack's responder");
    netd_ok(&h, &["down", other.to_str().expect("path")]);
    assert_eq!(
        names(&h.client().get("/v1/sandboxes").expect("sbs")),
        ["handmade"]
    );
    assert_eq!(responders(&h), Vec::<u32>::new());
}

#[test]
fn teardown_survives_a_closed_stdout() {
    if no_root() {
        return;
    }
    // As `make demo 2>&1 | tee log` then Ctrl-C: an in-process daemon, stdout and
    // stderr pipes whose readers are gone when the signal comes.
    let h = Host::bare();
    let mut up = Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .arg(bin("netd"))
        .arg("up")
        .arg(voting_app())
        .args(h.dir_args())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn netd up");
    let stderr = up.stderr.take().expect("stderr");
    let mut lines = BufReader::new(up.stdout.take().expect("stdout"));
    let mut seen = String::new();
    let t0 = Instant::now();
    while !seen.contains("press Ctrl-C") {
        let mut l = String::new();
        if lines.read_line(&mut l).expect("read stdout") == 0 {
            panic!("netd up ended early:\n{seen}");
        }
        seen.push_str(&l);
        assert!(t0.elapsed() < Duration::from_secs(120), "no 'up' line: {seen}");
    }
    assert!(h.netns_files().len() == 6, "{:?}", h.netns_files());
    drop(lines);
    drop(stderr);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT");
    let st = up.wait().expect("wait");
    assert!(st.success(), "netd up exited with {st}");
    assert!(!h.sh("ip -d link show").stdout.contains("netd:"));
    assert_eq!(h.netns_files(), Vec::<String>::new());
    assert_eq!(responders(&h), Vec::<u32>::new());
    // No nft element or rule of the stack: its bridges, subnets and ports are gone.
    let rs = h.sh("nft list ruleset").stdout;
    for needle in ["netd-frontend", "netd-backend", "8080", "5001", "ndvote"] {
        assert!(!rs.contains(needle), "nft still has {needle}:\n{rs}");
    }
}

#[test]
fn sigterm_while_the_stack_is_made_removes_it() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let mut up = spawn_up(&h, &voting_app());
    let c = h.client();
    let t0 = Instant::now();
    while c
        .get("/v1/sandboxes")
        .expect("sandboxes")
        .as_array()
        .is_none_or(|a| a.is_empty())
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "netd up made nothing");
        std::thread::sleep(Duration::from_millis(2));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(up.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("SIGTERM");
    let st = up.wait().expect("wait");
    let log = std::fs::read_to_string(h.base.join("up.log")).unwrap_or_default();
    println!("netd up, SIGTERM while it made the stack (exit {st}):\n{log}");
    assert!(log.contains("removing it"), "exit {st}:\n{log}");
    assert_empty(&h);
}
