//! netd-cni under podman 4.3 with its CNI backend (../shared/engines/podman.sh), in both
//! modes: two containers on one network reach each other, `-p 18080:80` is reachable
//! from an outside namespace, and `podman rm` leaves nothing (no sandbox, lease or veth).
//! podman runs in the test host's namespace, so in delegating mode it shares it with
//! the daemon. Skips with a reason when podman is not installed (a failure under
//! NETD_TEST_REQUIRE=1).

mod cni_support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use cni_support::{cni_dir, Mode, Node};
use integration::harness::{run, tcp, Out, Outside};
use integration::skip::{no_program, no_root};
use serde_json::json;

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/engines/podman.sh")
}

struct Podman<'a> {
    node: &'a Node,
    engine_dir: String,
    conf_dir: PathBuf,
}

impl Podman<'_> {
    fn cmd(&self, args: &[&str]) -> Out {
        run(Command::new(script())
            .args(args)
            .env("NETD_ENGINE_DIR", &self.engine_dir)
            .env("NETD_PODMAN_NETNS", &self.node.host.name)
            .env("NETD_CNI_CONF_DIR", &self.conf_dir)
            .env("NETD_CNI_PLUGIN_DIR", cni_dir()))
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.cmd(args);
        assert!(o.ok(), "podman {args:?}: {} {}", o.stdout, o.stderr);
        o.stdout.trim().to_string()
    }
}

impl Drop for Podman<'_> {
    fn drop(&mut self) {
        let _ = self.cmd(&["rm", "-af"]);
    }
}

fn podman_e2e(mode: Mode) {
    let node = Node::new(mode);
    let tag = match mode {
        Mode::Delegating => "deleg",
        Mode::Standalone => "stand",
    };
    let p = Podman {
        node: &node,
        // One podman storage per mode: containers.conf names the CNI config dir.
        engine_dir: format!("/tmp/netd-engine-ndcni-{tag}"),
        conf_dir: node.host.base.join("podman-net.d"),
    };
    std::fs::create_dir_all(&p.conf_dir).unwrap();
    let net = format!("ndcnipod{tag}");
    let mut plugin = node.conf(
        &net,
        "10.243.0.0/24",
        json!({"capabilities": {"portMappings": true}}),
    );
    plugin.as_object_mut().unwrap().remove("cniVersion");
    plugin.as_object_mut().unwrap().remove("name");
    let list = json!({"cniVersion": "1.0.0", "name": net, "plugins": [plugin]});
    std::fs::write(p.conf_dir.join(format!("{net}.conflist")), list.to_string()).unwrap();
    p.ok(&["setup"]);

    let serve = |name: &str, extra: &[&str]| -> String {
        let cname = format!("ndcni-{tag}-{name}-{}", std::process::id());
        let script = format!("while true; do echo {name}-hello | nc -l -p 80; done");
        let mut args = vec!["run", "-d", "--name", &cname, "--network", &net];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["netd/busybox", "sh", "-c", &script]);
        p.ok(&args)
    };
    let a_id = serve("a", &[]);
    let sbs = node.sandboxes();
    let a = sbs
        .iter()
        .find(|s| s.labels.get("cni.netd/container") == Some(&a_id))
        .unwrap_or_else(|| panic!("no sandbox for container {a_id}: {sbs:?}"));
    // podman passes the container name as K8S_POD_NAME.
    assert!(a.labels["io.kubernetes.pod.name"].starts_with(&format!("ndcni-{tag}-a")));
    let a_ip = a.endpoints[0].ipv4.unwrap().ip().to_string();

    // A second container reaches the first by its address.
    let mut got = String::new();
    for _ in 0..20 {
        let o = p.cmd(&[
            "run",
            "--rm",
            "--network",
            &net,
            "netd/busybox",
            "sh",
            "-c",
            &format!("nc -w 2 {a_ip} 80 </dev/null"),
        ]);
        got = o.stdout.clone();
        if got.contains("a-hello") {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        got.contains("a-hello"),
        "container b could not reach a at {a_ip}: {got:?}"
    );

    // -p 18080:80 from an outside namespace, through the host's address.
    let c_id = serve("c", &["-p", "18080:80"]);
    let out = Outside::new(&node.host, 244);
    let target = format!("{}:18080", out.host_ip);
    let mut answer = None;
    for _ in 0..20 {
        answer = tcp(Some(&out.netns()), &target, 1000);
        if answer.as_deref().is_some_and(|a| a.contains("c-hello")) {
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        answer.as_deref().is_some_and(|a| a.contains("c-hello")),
        "outside -> {target}: {answer:?}"
    );

    // podman rm: nothing left.
    p.ok(&["rm", "-f", &a_id, &c_id]);
    assert!(node.sandboxes().is_empty(), "{:?}", node.sandboxes());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());
    assert!(
        node.settled_endpoint_links().is_empty(),
        "{:?}",
        node.endpoint_links()
    );
    let nat = node.host.sh("nft list ruleset").stdout;
    assert!(!nat.contains("18080"), "published port left in nftables:\n{nat}");
}

#[test]
fn podman_two_containers_ports_and_rm_delegating() {
    if no_root() || no_program("podman", "podman") {
        return;
    }
    podman_e2e(Mode::Delegating);
}

#[test]
fn podman_two_containers_ports_and_rm_standalone() {
    if no_root() || no_program("podman", "podman") {
        return;
    }
    podman_e2e(Mode::Standalone);
}
