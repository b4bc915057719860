//! The ipvlan driver and 802.1Q (dotted) parents on real namespaces, through all three
//! entry points: netctl, the Docker remote driver protocol (spoken to netd's plugin
//! socket, as dockerd would) and netd-cni in both modes. Topology per test: a "host"
//! namespace running the daemon, with a veth `mvi<pid><n>` whose peer `lan0` sits in a
//! "LAN" namespace (`ndmv-<pid>-i<n>`) holding the LAN router's address.
//!
//! Where the kernel has ipvlan and 802.1Q (the VM lane, `scripts/vmlane-test.sh`): l2
//! sandboxes reach each other and the router, survive kill -9, and `rm` leaves nothing;
//! l3 and l3s sandboxes in two subnets of one network route through their device (no
//! gateway) to each other, and the LAN reaches them through a route via the host; an
//! internal network hangs off a dummy of its own and reaches nothing else; the private
//! flag keeps siblings apart; the vepa flag's children reach the LAN; a dotted parent
//! is made (marked as netd's), carries frames tagged with its VLAN ID (`tcpdump -e` on the
//! parent) and goes with its network, while an existing one stays; networks on two VLANs
//! do not reach each other; the Docker protocol and CNI ADD/CHECK/DEL work end to end,
//! in both modes, with the master on the node or (`linkInContainer`) in the pod.
//! On this development kernel those tests skip (`skip_for_lane`); the refusals run on
//! both kernels, each with the words of its own.

mod cni_support;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use cni_support::{ip_of, Mode, Netns, Node};
use integration::harness::{echo, nsenter, ping_from, respond, roundtrip, tcp, Host};
use integration::lan::Lan;
use integration::skip::{no_root, skip_for_lane, this_test};
use netd::kernel::linux::LinuxKernel;
use netd::kernel::Kernel;
use serde_json::{json, Value};

/// Whether the kernel of the namespace at `netns` has ipvlan (and, with `vlan`, 802.1Q)
/// links, asked with netd's own probes.
fn has(netns: &Path, vlan: bool) -> bool {
    let k = LinuxKernel::for_netns(netns).expect("kernel handle");
    k.ipvlan_supported().expect("probe ipvlan") && (!vlan || k.vlan_supported().expect("probe 802.1Q"))
}

/// Skips the running test on a kernel without ipvlan (or 802.1Q): true to return.
fn lacks(netns: &Path, vlan: bool) -> bool {
    !has(netns, vlan)
        && skip_for_lane(
            &this_test(),
            if vlan {
                "this kernel has no ipvlan or no 802.1Q VLAN links"
            } else {
                "this kernel has no ipvlan links"
            },
        )
}

/// `netctl network create -d ipvlan -o parent=P --subnet S [--gateway G] EXTRA NAME`.
fn ivnet(h: &Host, parent: &str, subnet: &str, gw: Option<&str>, name: &str, extra: &[&str]) {
    let parent = format!("parent={parent}");
    let mut args = vec![
        "network", "create", "-d", "ipvlan", "-o", &parent, "--subnet", subnet,
    ];
    if let Some(g) = gw {
        args.extend(["--gateway", g]);
    }
    args.extend_from_slice(extra);
    args.push(name);
    h.ctl(&args);
}

/// A shell command inside a namespace. Through bash: in the VM lane busybox's `nsenter`
/// would run its own `ip` applet, which knows no `-j`.
fn sh_in(netns: &Path, cmd: &str) -> integration::harness::Out {
    nsenter(netns, &["bash", "-c", cmd])
}

/// `ip -d -j link show` inside a namespace.
fn links_in(netns: &Path) -> Value {
    let o = sh_in(netns, "ip -d -j link show");
    assert!(o.ok(), "ip link: {}", o.stderr);
    serde_json::from_str(&o.stdout).expect("ip -j link")
}

fn link_in(netns: &Path, name: &str) -> Value {
    links_in(netns)
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l["ifname"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

fn of_kind(netns: &Path, kind: &str) -> Vec<String> {
    links_in(netns)
        .as_array()
        .into_iter()
        .flatten()
        .filter(|l| l["linkinfo"]["info_kind"] == kind)
        .map(|l| l["ifname"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Whether `f` holds within 10 s (the VM lane under load is slow).
fn wait_until(mut f: impl FnMut() -> bool) -> bool {
    for _ in 0..500 {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    f()
}

/// A ping from `sb` to `addr` answered within three tries (one lost to a slow first ARP
/// in the lane under load is not the datapath's fault).
fn reaches(h: &Host, sb: &str, addr: &str) -> bool {
    (0..3).any(|_| h.ping(sb, addr))
}

/// Nothing of netd's left in the host namespace, no ipvlan child there either.
fn assert_host_clean(h: &Host) {
    let l = links_in(&h.netns());
    assert!(!l.to_string().contains("netd:"), "netd links left: {l}");
    assert!(of_kind(&h.netns(), "ipvlan").is_empty(), "ipvlan left: {l}");
}

#[test]
fn l2_sandboxes_reach_each_other_and_the_lan_across_kill9_and_rm_leaves_nothing() {
    if no_root() {
        return;
    }
    let mut h = Host::new();
    if lacks(&h.netns(), false) {
        return;
    }
    let lan = Lan::new(&h.name, 81, "i");
    ivnet(&h, &lan.parent, &lan.subnet, Some(&lan.router), "lan", &[]);
    h.ctl(&["sandbox", "create", "a", "--network", "lan"]);
    h.ctl(&["sandbox", "create", "b", "--network", "lan"]);
    let (a, b) = (h.ip("a", "lan"), h.ip("b", "lan"));

    let j: Value = serde_json::from_str(&h.ctl(&["network", "inspect", "--json", "lan"])).expect("json");
    let n = if j.is_array() { &j[0] } else { &j };
    assert_eq!(
        (&n["driver"], &n["parent"], &n["ipvlan_mode"], &n["ipvlan_flag"]),
        (
            &json!("ipvlan"),
            &json!(lan.parent),
            &json!("l2"),
            &json!("bridge")
        ),
        "{j}"
    );

    // eth0 is an ipvlan child in l2 mode, marked as netd's, with the parent's MAC.
    let eth0 = link_in(&h.sb("a"), "eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], "ipvlan", "{eth0}");
    assert_eq!(eth0["linkinfo"]["info_data"]["mode"], "l2", "{eth0}");
    assert_eq!(eth0["ifalias"], "netd:ep=a/lan", "{eth0}");
    let parent = link_in(&h.netns(), &lan.parent);
    assert_eq!(eth0["address"], parent["address"], "{eth0} vs {parent}");
    let route = h.sh_in("a", "ip route show default").stdout;
    assert!(route.contains(&format!("via {}", lan.router)), "{route}");
    assert!(of_kind(&h.netns(), "ipvlan").is_empty());
    h.assert_consistent();

    // Real packets: sandbox <-> sandbox, sandbox -> router, LAN -> sandbox (TCP too).
    respond(&h.sb("b"), "b", &[80], &[]);
    assert!(h.ping("a", &b));
    assert!(h.ping("a", &lan.router));
    assert!(ping_from(&lan.netns(), None, &a));
    assert_eq!(
        tcp(Some(&h.sb("a")), &format!("{b}:80"), 2000).as_deref(),
        Some("b")
    );
    assert_eq!(
        tcp(Some(&lan.netns()), &format!("{b}:80"), 2000).as_deref(),
        Some("b")
    );

    // kill -9 twice: a flow keeps going, nothing is recreated or removed.
    echo(&h.sb("b"), 7);
    let addr: std::net::SocketAddr = format!("{b}:7").parse().unwrap();
    let mut flow = netd::kernel::probe::in_netns(Some(&h.sb("a")), move || {
        TcpStream::connect_timeout(&addr, Duration::from_secs(2))
    })
    .expect("open flow");
    flow.set_read_timeout(Some(Duration::from_secs(3))).unwrap();
    assert!(roundtrip(&mut flow, "before\n"));
    let idx_before = link_in(&h.sb("a"), "eth0")["ifindex"].clone();
    for _ in 0..2 {
        h.kill9();
        h.start();
        let info = h.client().get("/v1/info").expect("info");
        assert_eq!(info["reconcile"]["recreated"], json!([]), "{info}");
        assert_eq!(info["reconcile"]["removed"], json!([]), "{info}");
        assert!(roundtrip(&mut flow, "after\n"), "flow broke across kill -9");
        assert_eq!(
            link_in(&h.sb("a"), "eth0")["ifindex"],
            idx_before,
            "eth0 was recreated"
        );
        h.assert_consistent();
    }
    assert!(h.ping("b", &a));

    // connect/disconnect on a bridge sandbox: eth1 comes and goes.
    h.ctl(&["network", "create", "br", "--subnet", "10.81.0.0/24"]);
    h.ctl(&["sandbox", "create", "c", "--network", "br"]);
    h.ctl(&["network", "connect", "lan", "c"]);
    assert_eq!(of_kind(&h.sb("c"), "ipvlan"), vec!["eth1".to_string()]);
    assert!(h.ping("c", &a));
    h.ctl(&["network", "disconnect", "lan", "c"]);
    assert!(wait_until(|| of_kind(&h.sb("c"), "ipvlan").is_empty()));

    drop(flow);
    h.ctl(&["sandbox", "rm", "a", "b", "c"]);
    h.ctl(&["network", "prune", "-f"]);
    assert!(h.ctl(&["network", "ls", "-q"]).trim().is_empty());
    h.assert_consistent();
    assert_host_clean(&h);
    assert!(h.netns_files().is_empty());
}

#[test]
fn l3_and_l3s_route_through_the_device_and_the_lan_reaches_them_via_the_host() {
    if no_root() {
        return;
    }
    let h = Host::new();
    if lacks(&h.netns(), false) {
        return;
    }
    let lan = Lan::new(&h.name, 82, "i");
    // The host's own address on the LAN: l3 children send through the host's routes,
    // and the LAN's router reaches their subnet through it.
    assert!(h
        .sh(&format!("ip addr add 192.168.82.254/24 dev {}", lan.parent))
        .ok());
    let o = sh_in(&lan.netns(), "ip route add 10.82.0.0/16 via 192.168.82.254");
    assert!(o.ok(), "{}", o.stderr);
    for (i, mode) in ["l3", "l3s"].into_iter().enumerate() {
        // Two subnets on one network, as Docker's ipvlan: a sandbox in each.
        let (s1, s2) = (format!("10.82.{i}.0/24"), format!("10.82.{}.0/24", i + 10));
        let m = format!("ipvlan_mode={mode}");
        ivnet(&h, &lan.parent, &s1, None, mode, &["-o", &m, "--subnet", &s2]);
        let (sa, sb) = (format!("{mode}a"), format!("{mode}b"));
        let ip_b = format!("10.82.{}.20", i + 10);
        h.ctl(&["sandbox", "create", &sa, "--network", mode]);
        h.ctl(&["sandbox", "create", &sb, "--network", mode, "--ip", &ip_b]);
        assert!(h.ip(&sb, mode).starts_with(&ip_b), "{mode}: {}", h.ip(&sb, mode));
        let eth0 = link_in(&h.sb(&sa), "eth0");
        assert_eq!(eth0["linkinfo"]["info_data"]["mode"], mode, "{eth0}");
        // The default route is the device itself: no gateway address anywhere.
        let route = h.sh_in(&sa, "ip route show default").stdout;
        assert!(
            route.contains("default dev eth0") && !route.contains("via"),
            "{mode}: {route}"
        );
        let (a, b) = (h.ip(&sa, mode), h.ip(&sb, mode));
        assert!(h.ping(&sa, &b), "{mode}: sibling");
        assert!(h.ping(&sa, &lan.router), "{mode}: router");
        assert!(ping_from(&lan.netns(), None, &a), "{mode}: LAN -> sandbox");
        // The host does not reach its own children over the parent.
        assert!(
            !ping_from(&h.netns(), None, &b),
            "{mode}: the host reached a child"
        );
        h.assert_consistent();
        h.ctl(&["sandbox", "rm", &sa, &sb]);
        h.ctl(&["network", "rm", mode]);
    }
    // --internal, as Docker's ipvlan: the parent given is set aside for a dummy link of
    // the network's own (marked as netd's, gone with the network). Its sandboxes reach
    // each other and nothing on the LAN, with no default route.
    ivnet(
        &h,
        &lan.parent,
        "10.82.9.0/24",
        None,
        "inner",
        &["--internal", "-o", "ipvlan_mode=l3"],
    );
    let dm = netd::model::dummy_parent_name("inner");
    let dummy = link_in(&h.netns(), &dm);
    assert_eq!(dummy["linkinfo"]["info_kind"], "dummy", "{dummy}");
    assert_eq!(dummy["ifalias"], "netd:net=inner", "{dummy}");
    h.ctl(&["sandbox", "create", "i1", "--network", "inner"]);
    h.ctl(&["sandbox", "create", "i2", "--network", "inner"]);
    let eth0 = link_in(&h.sb("i1"), "eth0");
    assert_eq!(eth0["link_index"], dummy["ifindex"], "{eth0}");
    let route = h.sh_in("i1", "ip route show default").stdout;
    assert!(
        route.trim().is_empty(),
        "internal network got a default route: {route}"
    );
    let (i1, i2) = (h.ip("i1", "inner"), h.ip("i2", "inner"));
    assert!(h.ping("i1", &i2), "internal siblings");
    assert!(!h.ping("i1", &lan.router), "internal sandbox reached the LAN");
    assert!(
        !ping_from(&lan.netns(), None, &i1),
        "the LAN reached an internal sandbox"
    );
    h.assert_consistent();
    h.ctl(&["sandbox", "rm", "i1", "i2"]);
    h.ctl(&["network", "rm", "inner"]);
    assert!(
        wait_until(|| link_in(&h.netns(), &dm).is_null()),
        "dummy parent left"
    );
    assert_host_clean(&h);
}

#[test]
fn the_private_flag_keeps_siblings_apart() {
    if no_root() {
        return;
    }
    let h = Host::new();
    if lacks(&h.netns(), false) {
        return;
    }
    let lan = Lan::new(&h.name, 83, "i");
    ivnet(
        &h,
        &lan.parent,
        &lan.subnet,
        Some(&lan.router),
        "p",
        &["-o", "ipvlan_flag=private"],
    );
    h.ctl(&["sandbox", "create", "p1", "--network", "p"]);
    h.ctl(&["sandbox", "create", "p2", "--network", "p"]);
    let eth0 = link_in(&h.sb("p1"), "eth0");
    assert!(
        eth0["linkinfo"]["info_data"].to_string().contains("private"),
        "{eth0}"
    );
    assert!(h.ping("p1", &lan.router));
    assert!(!h.ping("p1", &h.ip("p2", "p")), "private flag let siblings talk");
    h.ctl(&["sandbox", "rm", "p1", "p2"]);
    h.ctl(&["network", "rm", "p"]);
    assert_host_clean(&h);
}

/// `-o ipvlan_flag=vepa`: the child is made with the flag, and its traffic leaves
/// through the parent onto the LAN (the router answers, and reaches the sandbox back).
#[test]
fn the_vepa_flag_makes_children_that_reach_the_lan() {
    if no_root() {
        return;
    }
    let h = Host::new();
    if lacks(&h.netns(), false) {
        return;
    }
    let lan = Lan::new(&h.name, 85, "i");
    ivnet(
        &h,
        &lan.parent,
        &lan.subnet,
        Some(&lan.router),
        "v",
        &["-o", "ipvlan_flag=vepa"],
    );
    let j: Value = serde_json::from_str(&h.ctl(&["network", "inspect", "--json", "v"])).expect("json");
    let n = if j.is_array() { &j[0] } else { &j };
    assert_eq!(n["ipvlan_flag"], "vepa", "{j}");
    h.ctl(&["sandbox", "create", "v1", "--network", "v"]);
    let eth0 = link_in(&h.sb("v1"), "eth0");
    assert_eq!(eth0["linkinfo"]["info_kind"], "ipvlan", "{eth0}");
    assert!(
        eth0["linkinfo"]["info_data"].to_string().contains("vepa"),
        "{eth0}"
    );
    let a = h.ip("v1", "v");
    assert!(h.ping("v1", &lan.router), "vepa sandbox -> LAN router");
    assert!(ping_from(&lan.netns(), None, &a), "LAN -> vepa sandbox");
    respond(&h.sb("v1"), "v1", &[80], &[]);
    assert_eq!(
        tcp(Some(&lan.netns()), &format!("{a}:80"), 2000).as_deref(),
        Some("v1")
    );
    h.assert_consistent();
    h.ctl(&["sandbox", "rm", "v1"]);
    h.ctl(&["network", "rm", "v"]);
    assert_host_clean(&h);
}

/// The LAN side of VLAN `id`: `lan0.<id>` in the LAN namespace with router address
/// `192.168.<k>.1/24`.
fn lan_vlan(lan: &Lan, id: u16, k: u8) -> String {
    let o = sh_in(
        &lan.netns(),
        &format!(
            "ip link add link lan0 name lan0.{id} type vlan id {id} && ip addr add 192.168.{k}.1/24 dev lan0.{id} && ip link set lan0.{id} up"
        ),
    );
    assert!(o.ok(), "LAN vlan {id}: {}", o.stderr);
    format!("192.168.{k}.1")
}

#[test]
fn a_dotted_parent_is_made_tagged_and_removed_while_an_existing_one_stays() {
    if no_root() {
        return;
    }
    let h = Host::new();
    if lacks(&h.netns(), true) {
        return;
    }
    let lan = Lan::new(&h.name, 84, "i");
    let r10 = lan_vlan(&lan, 10, 184);
    let r20 = lan_vlan(&lan, 20, 185);
    let (p10, p20) = (format!("{}.10", lan.parent), format!("{}.20", lan.parent));

    // VLAN 10: made by netd for an ipvlan network.
    ivnet(&h, &p10, "192.168.184.0/24", Some(&r10), "v10", &[]);
    let l = link_in(&h.netns(), &p10);
    assert_eq!(l["linkinfo"]["info_kind"], "vlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["id"], 10, "{l}");
    assert_eq!(l["ifalias"], "netd:net=v10", "{l}");
    // VLAN 20: someone's own, used by a macvlan network. No IPv6 on it: its link-local
    // address came and went on the kernel's clock between the bad-input snapshots
    // (seen in the lane), which is nothing netd did.
    assert!(h
        .sh(&format!(
            "ip link add link {} name {p20} type vlan id 20 && \
             echo 1 > /proc/sys/net/ipv6/conf/{p20}/disable_ipv6 && ip link set {p20} up",
            lan.parent
        ))
        .ok());
    h.ctl(&[
        "network",
        "create",
        "-d",
        "macvlan",
        "-o",
        &format!("parent={p20}"),
        "--subnet",
        "192.168.185.0/24",
        "--gateway",
        &r20,
        "v20",
    ]);
    // Another network on the same parent and VLAN is refused, whatever its driver.
    for d in ["ipvlan", "macvlan"] {
        let before = h.settled_snapshot();
        let o = h.netctl(&[
            "network",
            "create",
            "-d",
            d,
            "-o",
            &format!("parent={p10}"),
            "--subnet",
            "10.84.0.0/24",
            "x",
        ]);
        assert_ne!(o.code, 0);
        assert!(
            o.stderr.contains("network v10 is already using parent interface"),
            "{}",
            o.stderr
        );
        assert_eq!(h.snapshot(), before);
    }
    h.ctl(&["sandbox", "create", "a", "--network", "v10"]);
    h.ctl(&["sandbox", "create", "b", "--network", "v20"]);
    assert!(reaches(&h, "a", &r10));
    assert!(reaches(&h, "b", &r20));
    // Isolation: the two VLANs do not meet (the LAN namespace, which holds both routers'
    // addresses, does not forward between them).
    assert!(!h.ping("a", &h.ip("b", "v20")), "VLAN 10 reached VLAN 20");
    assert!(!h.ping("b", &h.ip("a", "v10")), "VLAN 20 reached VLAN 10");

    // On the wire (the parent), the sandbox's frames carry VLAN ID 10.
    let dump = Command::new("nsenter")
        .arg(format!("--net={}", h.netns().display()))
        .args([
            "bash",
            "-c",
            &format!(
                "timeout 10 tcpdump -e -nn -l -c 2 -i {} 'vlan 10 and icmp'",
                lan.parent
            ),
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("tcpdump (scripts/install-deps.sh installs it)");
    // Pings until tcpdump has its two packets: it may take a while to start (the lane
    // under load), and one ping after a fixed sleep missed it there.
    let mut dump = dump;
    let t0 = std::time::Instant::now();
    while dump.try_wait().expect("tcpdump").is_none() && t0.elapsed() < Duration::from_secs(10) {
        h.ping("a", &r10);
    }
    let out = dump.wait_with_output().expect("tcpdump output");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("vlan 10,") && text.contains("ICMP echo"),
        "tcpdump: {text}"
    );
    assert!(!text.contains("vlan 20"), "tcpdump: {text}");

    // kill -9 and restart: both parents stay as they are.
    let mut h = h;
    h.restart();
    let info = h.client().get("/v1/info").expect("info");
    assert_eq!(info["reconcile"]["removed"], json!([]), "{info}");
    assert_eq!(info["reconcile"]["recreated"], json!([]), "{info}");
    assert!(reaches(&h, "a", &r10));

    h.ctl(&["sandbox", "rm", "a", "b"]);
    h.ctl(&["network", "rm", "v10"]);
    assert!(
        wait_until(|| link_in(&h.netns(), &p10).is_null()),
        "{p10} left after rm"
    );
    h.ctl(&["network", "rm", "v20"]);
    assert!(
        !link_in(&h.netns(), &p20).is_null(),
        "someone's {p20} was removed"
    );
    assert_eq!(of_kind(&h.netns(), "vlan"), vec![p20.clone()]);
    h.assert_consistent();
    assert_host_clean(&h);
}

/// One request of the Docker remote driver protocol to the plugin socket:
/// `Ok(answer)` for HTTP 200, `Err(Err text)` otherwise.
fn plugin(h: &Host, method: &str, body: &Value) -> Result<Value, String> {
    let sock = h.docker_plugin_dir.join("netd.sock");
    let mut s = UnixStream::connect(&sock).expect("plugin socket");
    let body = body.to_string();
    let req = format!(
        "POST /{method} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).expect("write");
    let mut out = String::new();
    s.read_to_string(&mut out).expect("read");
    let v: Value = out
        .split_once("\r\n\r\n")
        .and_then(|(_, b)| serde_json::from_str(b).ok())
        .unwrap_or(Value::Null);
    if out.starts_with("HTTP/1.1 200") {
        Ok(v)
    } else {
        Err(v["Err"].as_str().unwrap_or(&out).to_string())
    }
}

fn create_network(h: &Host, id: &str, opts: Value) -> Result<Value, String> {
    plugin(
        h,
        "NetworkDriver.CreateNetwork",
        &json!({
            "NetworkID": id,
            "IPv4Data": [{"AddressSpace": "default", "Pool": "192.168.86.0/24", "Gateway": "192.168.86.1/24"}],
            "IPv6Data": [],
            "Options": {"com.docker.network.enable_ipv6": false, "com.docker.network.generic": opts}}),
    )
}

#[test]
fn docker_remote_driver_makes_ipvlan_networks_and_refuses_bad_options() {
    if no_root() {
        return;
    }
    let h = Host::new();
    if lacks(&h.netns(), false) {
        return;
    }
    let lan = Lan::new(&h.name, 86, "i");
    let id = |n: u32| format!("{:0<64}", format!("1bc{n:02x}{:08x}", std::process::id()));
    // Docker-style option errors: one line, nothing changed.
    for (opts, says) in [
        (
            json!({"netd.driver": "ipvlan"}),
            "ipvlan needs a parent interface: -o parent=IFACE",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": "lo"}),
            "loopback interface is not a valid ipvlan parent link",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": lan.parent, "ipvlan_mode": "l4"}),
            "requested ipvlan mode \"l4\" is not valid",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": lan.parent, "ipvlan_flag": "passthru"}),
            "requested ipvlan flag \"passthru\" is not valid",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": "eth0.4095"}),
            "vlan id must be between 1-4094",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": "nosuch0"}),
            "parent interface nosuch0 not found",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": lan.parent, "macvlan_mode": "vepa"}),
            "option macvlan_mode is not for this ipvlan network",
        ),
        (
            json!({"netd.driver": "ipvlan", "parent": lan.parent, "netd.parent_in_sandbox": "true"}),
            "option netd.parent_in_sandbox is not for Docker networks",
        ),
    ] {
        let before = h.settled_snapshot();
        let e = create_network(&h, &id(1), opts.clone()).unwrap_err();
        assert!(e.contains(says), "{opts}: {e}");
        assert_eq!(e.lines().count(), 1, "{e}");
        assert_eq!(h.snapshot(), before, "{opts} changed something");
    }

    create_network(
        &h,
        &id(2),
        json!({"netd.driver": "ipvlan", "parent": lan.parent, "ipvlan_mode": "l3"}),
    )
    .expect("CreateNetwork");
    let ep = format!("{:0<64}", "e1");
    // A MAC of its own is refused, as by Docker's ipvlan driver.
    let e = plugin(
        &h,
        "NetworkDriver.CreateEndpoint",
        &json!({
        "NetworkID": id(2), "EndpointID": ep,
        "Interface": {"Address": "192.168.86.10/24", "MacAddress": "02:42:c0:a8:56:0a"}}),
    )
    .unwrap_err();
    assert!(e.contains("do not support custom mac address"), "{e}");
    let r = plugin(
        &h,
        "NetworkDriver.CreateEndpoint",
        &json!({
        "NetworkID": id(2), "EndpointID": ep, "Interface": {"Address": "192.168.86.10/24"}}),
    )
    .expect("CreateEndpoint");
    assert_eq!(
        r,
        json!({"Interface": {}}),
        "no MAC is chosen for an ipvlan child"
    );
    let j = plugin(
        &h,
        "NetworkDriver.Join",
        &json!({"NetworkID": id(2), "EndpointID": ep, "SandboxKey": "/x"}),
    )
    .expect("Join");
    // l3: no gateway; a connected default route instead.
    assert!(j.get("Gateway").is_none(), "{j}");
    assert_eq!(
        j["StaticRoutes"],
        json!([{"Destination": "0.0.0.0/0", "RouteType": 1, "NextHop": ""}]),
        "{j}"
    );
    let src = j["InterfaceName"]["SrcName"]
        .as_str()
        .expect("SrcName")
        .to_string();
    let l = link_in(&h.netns(), &src);
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "l3", "{l}");
    plugin(
        &h,
        "NetworkDriver.Leave",
        &json!({"NetworkID": id(2), "EndpointID": ep}),
    )
    .expect("Leave");
    plugin(
        &h,
        "NetworkDriver.DeleteEndpoint",
        &json!({"NetworkID": id(2), "EndpointID": ep}),
    )
    .expect("DeleteEndpoint");
    plugin(&h, "NetworkDriver.DeleteNetwork", &json!({"NetworkID": id(2)})).expect("DeleteNetwork");
    assert!(
        wait_until(|| of_kind(&h.netns(), "ipvlan").is_empty()),
        "ipvlan child left"
    );
    assert_host_clean(&h);
}

/// A config in the reference ipvlan plugin's shape (`master`, `mode`, `mtu`,
/// `linkInContainer`), `type` changed and `driver` added.
fn cni_conf(node: &Node, lan: &Lan, name: &str, mode: &str) -> Value {
    let mut c = json!({
        "cniVersion": "1.1.0",
        "name": name,
        "type": "netd-cni",
        "driver": "ipvlan",
        "master": lan.parent,
        "mode": mode,
        "mtu": 1400,
        "linkInContainer": false,
        "ipam": {"type": "netd", "subnet": lan.subnet, "gateway": lan.router},
    });
    match node.mode {
        Mode::Delegating => c["socket"] = node.host.socket().display().to_string().into(),
        Mode::Standalone => c["stateDir"] = node.state_dir().display().to_string().into(),
    }
    c
}

fn cni_both_modes(mode: Mode, k: u8) {
    let node = Node::new(mode);
    let lan = Lan::new(&node.host.name, k, "c");
    let c = cni_conf(&node, &lan, &format!("ndiv-net{k}"), "l2");
    let (ns1, ns2) = (Netns::new(), Netns::new());
    let (code, r1, err) = node.exec("ADD", "iv-1", &ns1.path(), "net1", &c);
    assert_eq!(code, 0, "ADD: {r1} {err}");
    let (code, r2, err) = node.exec("ADD", "iv-2", &ns2.path(), "net1", &c);
    assert_eq!(code, 0, "ADD: {r2} {err}");
    let ifaces = r1["interfaces"].as_array().unwrap();
    assert_eq!(ifaces.len(), 1, "{r1}");
    assert_eq!(ifaces[0]["name"], "net1");
    assert!(ifaces[0].get("mac").is_none(), "{r1}");
    assert_eq!(r1["routes"][0], json!({"dst": "0.0.0.0/0", "gw": lan.router}));
    let l = {
        let o = sh_in(Path::new(&ns1.path()), "ip -d -j link show net1");
        let v: Value = serde_json::from_str(&o.stdout).expect("ip -j");
        v[0].clone()
    };
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "l2", "{l}");
    assert_eq!(l["mtu"], 1400, "{l}");
    let p1 = Path::new(&ns1.path()).to_path_buf();
    assert!(ping_from(&p1, None, &ip_of(&r2)));
    assert!(ping_from(&p1, None, &lan.router));
    assert!(ping_from(&lan.netns(), None, &ip_of(&r1)));

    let mut cc = c.clone();
    cc["prevResult"] = r1.clone();
    let (code, out, err) = node.exec("CHECK", "iv-1", &ns1.path(), "net1", &cc);
    assert_eq!(code, 0, "CHECK: {out} {err}");
    // CHECK notices a child removed behind netd's back.
    assert!(ns1.sh("ip link del net1").ok());
    let (code, out, _) = node.exec("CHECK", "iv-1", &ns1.path(), "net1", &cc);
    assert_ne!(code, 0, "CHECK passed without the interface: {out}");

    for _ in 0..2 {
        for (cid, ns) in [("iv-1", &ns1), ("iv-2", &ns2)] {
            let (code, out, err) = node.exec("DEL", cid, &ns.path(), "net1", &c);
            assert_eq!(code, 0, "DEL: {out} {err}");
        }
    }
    assert!(ns2.link_gone("net1"), "net1 left in the container");
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());
    assert!(of_kind(&node.host.netns(), "ipvlan").is_empty());
}

/// `ip -d -j link show NAME` inside a namespace (Null when there is none).
fn link_of(ns: &Netns, name: &str) -> Value {
    let o = ns.sh(&format!("ip -d -j link show {name} 2>/dev/null || echo '[null]'"));
    let v: Value = serde_json::from_str(o.stdout.trim()).expect("ip -j");
    v[0].clone()
}

/// The LAN's parent link taken out of the node's namespace and put into the pod's, as a
/// runtime hands a pod a NIC of its own; up there, without an address.
fn move_parent_into(node: &Node, lan: &Lan, ns: &Netns) {
    let o = integration::harness::sh(&format!(
        "set -e; ip -n {h} link set {p} netns {ns}; ip -n {ns} link set {p} up",
        h = node.host.name,
        p = lan.parent,
        ns = ns.name
    ));
    assert!(o.ok(), "move {} into {}: {}", lan.parent, ns.name, o.stderr);
}

/// `linkInContainer: true` (the reference ipvlan plugin's key): the master is a link of
/// the pod's namespace. The child is made there, beside it, reaches the LAN behind it
/// and is reached from there; the node gets nothing (no child, no VLAN link); CHECK
/// wants the master in the pod; DEL removes the child and leaves the master, which is
/// the runtime's. A pod without the master is refused and left as it was; without
/// `master` the pod's default-route interface is taken; a daemon killed with -9 finds
/// the child as it left it.
fn cni_link_in_container(mode: Mode, k: u8) {
    let mut node = Node::new(mode);
    let (pod1, pod2, pod3) = (Netns::new(), Netns::new(), Netns::new());
    let (lan, lan3) = (
        Lan::new(&node.host.name, k, "c"),
        Lan::new(&node.host.name, k + 2, "c"),
    );
    move_parent_into(&node, &lan, &pod1);
    let mut c = cni_conf(&node, &lan, &format!("ndiv-lic{k}"), "l2");
    c["linkInContainer"] = json!(true);

    let (code, r1, err) = node.exec("ADD", "lic-1", &pod1.path(), "net1", &c);
    assert_eq!(code, 0, "ADD: {r1} {err}");
    let (l, master) = (link_of(&pod1, "net1"), link_of(&pod1, &lan.parent));
    assert_eq!(l["linkinfo"]["info_kind"], "ipvlan", "{l}");
    assert_eq!(l["linkinfo"]["info_data"]["mode"], "l2", "{l}");
    // A parent in the same namespace is shown by name (one elsewhere by index).
    assert_eq!(
        l["link"],
        json!(lan.parent),
        "net1 is not a child of {}: {l}",
        lan.parent
    );
    assert_eq!(l["address"], master["address"], "{l} vs {master}");
    assert_eq!(l["mtu"], 1400, "{l}");
    assert_eq!(r1["interfaces"][0]["sandbox"], json!(pod1.path()), "{r1}");
    let p1 = Path::new(&pod1.path()).to_path_buf();
    assert!(ping_from(&p1, None, &lan.router), "pod -> LAN router");
    assert!(ping_from(&lan.netns(), None, &ip_of(&r1)), "LAN -> pod");
    // Nothing on the node: the parent left it, no child or VLAN link was made there.
    let host = links_in(&node.host.netns());
    assert!(!host.to_string().contains(&lan.parent), "{host}");
    assert!(of_kind(&node.host.netns(), "ipvlan").is_empty(), "{host}");
    assert!(of_kind(&node.host.netns(), "vlan").is_empty(), "{host}");

    let mut cc = c.clone();
    cc["prevResult"] = r1.clone();
    let (code, out, err) = node.exec("CHECK", "lic-1", &pod1.path(), "net1", &cc);
    assert_eq!(code, 0, "CHECK: {out} {err}");
    // The master renamed away (its child stays): CHECK says so.
    let rename = |from: &str, to: &str| {
        let o = pod1.sh(&format!(
            "ip link set {from} down && ip link set {from} name {to} && ip link set {to} up"
        ));
        assert!(o.ok(), "rename {from}: {}", o.stderr);
    };
    rename(&lan.parent, "ndlicx");
    let (code, out, _) = node.exec("CHECK", "lic-1", &pod1.path(), "net1", &cc);
    assert_ne!(code, 0, "CHECK passed without the master: {out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or_default()
            .contains("linkInContainer"),
        "{out}"
    );
    rename("ndlicx", &lan.parent);
    assert!(
        ping_from(&p1, None, &lan.router),
        "pod -> LAN router after the rename"
    );

    // A pod without that master: refused, nothing made there or kept in netd.
    let (code, out, _) = node.exec("ADD", "lic-2", &pod2.path(), "net1", &c);
    assert_eq!(code, 1, "{out}");
    let msg = out["msg"].as_str().unwrap_or_default();
    assert!(
        msg.contains(&lan.parent) && msg.contains("sandbox's namespace"),
        "{out}"
    );
    assert!(!msg.contains('\n'), "{out}");
    assert!(pod2.link_gone("net1"));
    assert_eq!(node.sandboxes().len(), 1, "{:?}", node.sandboxes());

    // No "master": the pod's own default-route interface (the node has none here).
    move_parent_into(&node, &lan3, &pod3);
    assert!(pod3.sh(&format!("ip route add default dev {}", lan3.parent)).ok());
    let mut c3 = cni_conf(&node, &lan3, &format!("ndiv-lid{k}"), "l2");
    c3["linkInContainer"] = json!(true);
    // The pod's default route is its NIC's already: this network adds none.
    c3["isDefaultGateway"] = json!(false);
    c3.as_object_mut().unwrap().remove("master");
    let (code, r3, err) = node.exec("ADD", "lic-3", &pod3.path(), "net1", &c3);
    assert_eq!(code, 0, "ADD without master: {r3} {err}");
    let l3 = link_of(&pod3, "net1");
    assert_eq!(l3["link"], json!(lan3.parent), "{l3}");

    if matches!(node.mode, Mode::Delegating) {
        let idx = link_of(&pod1, "net1")["ifindex"].clone();
        node.host.kill9();
        node.host.start();
        let info = node.host.client().get("/v1/info").expect("info");
        assert_eq!(info["reconcile"]["recreated"], json!([]), "{info}");
        assert_eq!(info["reconcile"]["removed"], json!([]), "{info}");
        assert_eq!(link_of(&pod1, "net1")["ifindex"], idx, "net1 was recreated");
        assert!(
            ping_from(&p1, None, &lan.router),
            "pod -> LAN router after kill -9"
        );
    }

    for _ in 0..2 {
        for (cid, ns, conf) in [("lic-1", &pod1, &c), ("lic-2", &pod2, &c), ("lic-3", &pod3, &c3)] {
            let (code, out, err) = node.exec("DEL", cid, &ns.path(), "net1", conf);
            assert_eq!(code, 0, "DEL {cid}: {out} {err}");
        }
    }
    assert!(
        pod1.link_gone("net1") && pod3.link_gone("net1"),
        "net1 left in a pod"
    );
    assert!(
        !link_of(&pod1, &lan.parent).is_null(),
        "DEL removed the pod's master"
    );
    assert!(
        !link_of(&pod3, &lan3.parent).is_null(),
        "DEL removed the pod's master"
    );
    assert!(node.sandboxes().is_empty());
    assert!(node.leases().values().all(Vec::is_empty), "{:?}", node.leases());
    assert!(of_kind(&node.host.netns(), "ipvlan").is_empty());
}

#[test]
fn cni_link_in_container_delegating() {
    if no_root() {
        return;
    }
    let probe = Host::bare();
    if lacks(&probe.netns(), false) {
        return;
    }
    cni_link_in_container(Mode::Delegating, 91);
}

#[test]
fn cni_link_in_container_standalone() {
    if no_root() {
        return;
    }
    let probe = Host::bare();
    if lacks(&probe.netns(), false) {
        return;
    }
    cni_link_in_container(Mode::Standalone, 95);
}

#[test]
fn cni_add_check_del_delegating() {
    if no_root() {
        return;
    }
    let probe = Host::bare();
    if lacks(&probe.netns(), false) {
        return;
    }
    cni_both_modes(Mode::Delegating, 87);
}

#[test]
fn cni_add_check_del_standalone() {
    if no_root() {
        return;
    }
    let probe = Host::bare();
    if lacks(&probe.netns(), false) {
        return;
    }
    cni_both_modes(Mode::Standalone, 88);
}

/// Runs on both kernels: refusals in the model's words anywhere; then, by kernel, the
/// one line of a kernel without ipvlan or 802.1Q (this development kernel), or the
/// parent-in-use refusal (the VM lane). Each changes nothing.
#[test]
fn bad_input_is_refused_with_one_line_and_changes_nothing() {
    if no_root() {
        return;
    }
    let h = Host::new();
    let lan = Lan::new(&h.name, 89, "i");
    // The parent's IPv6 link-local address leaves "tentative" a moment after it came
    // up; the snapshots compare addresses, so that settles first.
    assert!(
        wait_until(|| h.sh("ip -6 addr show tentative").stdout.trim().is_empty()),
        "a tentative address stayed"
    );
    let p = format!("parent={}", lan.parent);
    let mut cases: Vec<(Vec<String>, String)> = [
        (
            vec!["-d", "ipvlan", "--subnet", "10.89.0.0/24", "x"],
            "ipvlan needs a parent interface",
        ),
        (
            vec!["-d", "ipvlan", "-o", "parent=lo", "x"],
            "loopback interface is not a valid ipvlan parent",
        ),
        (
            vec!["-d", "ipvlan", "-o", &p, "-o", "ipvlan_mode=l4", "x"],
            "requested ipvlan mode \"l4\"",
        ),
        (
            vec!["-d", "ipvlan", "-o", &p, "-o", "ipvlan_flag=passthru", "x"],
            "requested ipvlan flag \"passthru\"",
        ),
        (
            vec!["-d", "ipvlan", "-o", &p, "-o", "macvlan_mode=vepa", "x"],
            "not for this ipvlan network",
        ),
        (
            vec!["-d", "ipvlan", "-o", &p, "-o", "vlan=10", "x"],
            "use a VLAN parent: -o parent=eth0.10",
        ),
        (
            vec!["-d", "ipvlan", "-o", "parent=eth0.4095", "x"],
            "vlan id must be between 1-4094",
        ),
        (
            vec!["-d", "macvlan", "-o", "parent=eth0.x", "x"],
            "unable to parse a valid vlan id",
        ),
        (
            vec![
                "-d",
                "ipvlan",
                "-o",
                &p,
                "-o",
                "com.docker.network.bridge.name=b",
                "x",
            ],
            "bridge option",
        ),
        (
            vec!["-o", "ipvlan_mode=l3", "x"],
            "option ipvlan_mode is for macvlan and ipvlan networks",
        ),
        (
            vec!["-o", "netd.parent_in_sandbox=true", "x"],
            "option netd.parent_in_sandbox is for macvlan and ipvlan networks",
        ),
        (
            vec![
                "-d",
                "ipvlan",
                "--internal",
                "-o",
                "netd.parent_in_sandbox=true",
                "x",
            ],
            "option netd.parent_in_sandbox is not for an internal network",
        ),
    ]
    .into_iter()
    .map(|(a, w)| (a.into_iter().map(String::from).collect(), w.to_string()))
    .collect();
    let vlan_parent = format!("parent={}.30", lan.parent);
    if has(&h.netns(), true) {
        // The lane: a parent in use is refused, whatever the driver.
        ivnet(&h, &lan.parent, &lan.subnet, Some(&lan.router), "lan", &[]);
        for d in ["ipvlan", "macvlan"] {
            cases.push((
                vec![
                    "-d".into(),
                    d.into(),
                    "-o".into(),
                    p.clone(),
                    "--subnet".into(),
                    "10.89.1.0/24".into(),
                    "y".into(),
                ],
                "network lan is already using parent interface".into(),
            ));
        }
        h.ctl(&["sandbox", "create", "s", "--network", "lan"]);
        let o = h.netctl(&["sandbox", "create", "pp", "--network", "lan", "-p", "8080:80"]);
        assert!(o.stderr.contains("uses the ipvlan driver"), "{}", o.stderr);
        let o = h.netctl(&[
            "sandbox",
            "create",
            "m",
            "--network",
            "lan",
            "--mac-address",
            "02:00:00:00:00:01",
        ]);
        assert!(o.stderr.contains("MAC address of parent"), "{}", o.stderr);
    } else {
        // This kernel: one line naming what it lacks.
        cases.push((
            vec!["-d".into(), "ipvlan".into(), "-o".into(), p.clone(), "x".into()],
            "an ipvlan network: this kernel has no ipvlan support (CONFIG_IPVLAN)".into(),
        ));
        cases.push((
            vec![
                "-d".into(),
                "macvlan".into(),
                "-o".into(),
                vlan_parent.clone(),
                "x".into(),
            ],
            format!(
                "parent {}.30: this kernel has no 802.1Q VLAN support (CONFIG_VLAN_8021Q)",
                lan.parent
            ),
        ));
        // netd-cni standalone: code 2 with the same words, nothing made.
        let node = Node::new(Mode::Standalone);
        let nlan = Lan::new(&node.host.name, 90, "b");
        let c = cni_conf(&node, &nlan, "ndiv-bad", "l2");
        let ns = Netns::new();
        let (code, out, _) = node.exec("ADD", "iv-bad", &ns.path(), "net1", &c);
        assert_eq!((code, out["code"].as_u64()), (1, Some(2)), "{out}");
        assert!(
            out["msg"]
                .as_str()
                .unwrap_or_default()
                .contains("no ipvlan support"),
            "{out}"
        );
        assert!(node.sandboxes().is_empty() && ns.link_gone("net1"));
    }
    for (args, want) in cases {
        let mut full: Vec<&str> = vec!["network", "create"];
        full.extend(args.iter().map(String::as_str));
        let before = h.settled_snapshot();
        let o = h.netctl(&full);
        assert_ne!(o.code, 0, "{full:?} was accepted");
        let err = o.stderr.trim();
        assert_eq!(err.lines().count(), 1, "{full:?}: not one line: {err}");
        assert!(err.contains(&want), "{full:?}: {err} (wanted {want})");
        assert_eq!(before, h.snapshot(), "{full:?} changed something");
    }
    h.assert_consistent();
}
