//! netd-cni's `vlan` key (the reference `bridge` plugin's), in both modes, by direct exec.
//!
//! Where the kernel filters by VLAN on bridges (CONFIG_BRIDGE_VLAN_FILTERING; the VM lane,
//! `scripts/vmlane-test.sh`): two networks on one bridge, VLAN 100 and VLAN 200; the
//! ports are PVID + egress untagged in their VLAN (`bridge -j vlan show`), the gateways
//! are `<bridge>.<vlan>`, the two VLAN 100 containers reach each other and the VLAN 200
//! one reaches neither (not even by ARP), another VLAN under the same network name is
//! code 7, and DEL leaves no port, lease or sandbox.
//!
//! `vlanTrunk` (same kernels): the network's bridge filters by VLAN, each port is in VLAN
//! 1 untagged (the network's own addresses and gateway) and carries the trunk's VLANs
//! tagged (`bridge -j vlan show`); containers reach each other untagged and over VLAN
//! devices of the trunk (`eth0.101`), not over a VLAN outside it, nor with a tagged frame
//! from a MAC that is not the endpoint's (anti-spoofing); another trunk under the same
//! network name is code 7; DEL leaves nothing.
//!
//! Where it does not (this development kernel): ADD with `vlan` or `vlanTrunk` is code 2
//! naming the missing feature, and changes nothing (no link, no lease, no network, no
//! nft rule).
//!
//! Each test runs only on the kernel it is about and skips on the other: the first two
//! with `skip_for_lane` on a kernel without the feature (this binary is in
//! `integration/vmlane-tests`), the last with `skip_in_lane` in the VM lane.

mod cni_support;

use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use cni_support::{ip_of, Mode, Netns, Node};
use integration::harness::{nsenter, ping_from, sh};
use integration::skip::{no_root, skip_for_lane, skip_in_lane, this_test};
use netd::kernel::linux::LinuxKernel;
use netd::kernel::Kernel;
use serde_json::{json, Value};

/// Whether the node's kernel filters by VLAN on bridges (netd's own probe).
fn vlan_filtering(node: &Node) -> bool {
    LinuxKernel::for_netns(node.host.netns())
        .and_then(|k| k.bridge_vlan_filtering())
        .expect("probe bridge VLAN filtering")
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// A container namespace named with this test's prefix (`nv-<pid>-<n>`), deleted on drop.
fn container() -> Netns {
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("nv-{}-{n}", std::process::id());
    let o = sh(&format!("ip netns add {name} && ip -n {name} link set lo up"));
    assert!(o.ok(), "ip netns add {name}: {}", o.stderr);
    Netns { name }
}

fn bridge_name(mode: Mode) -> String {
    let m = if mode == Mode::Delegating { 'd' } else { 's' };
    format!("nvbr{m}{}", std::process::id() % 10_000)
}

fn conf(node: &Node, name: &str, subnet: &str, bridge: &str, vlan: u16) -> Value {
    node.conf(
        name,
        subnet,
        json!({"bridge": bridge, "vlan": vlan, "isGateway": true, "preserveDefaultVlan": false}),
    )
}

/// One port's VLANs: (vid, flags such as "PVID" and "Egress Untagged").
type PortVlans = Vec<(u64, Vec<String>)>;

/// `bridge -j vlan show` in the node: port -> its VLANs.
fn vlans(node: &Node) -> Vec<(String, PortVlans)> {
    let o = node.host.sh("bridge -j vlan show");
    assert!(o.ok(), "bridge vlan show: {}", o.stderr);
    let v: Value = serde_json::from_str(o.stdout.trim()).unwrap_or(json!([]));
    v.as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            let vl = p["vlans"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|e| {
                    let flags = e["flags"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|f| f.as_str().map(str::to_string))
                        .collect();
                    (e["vlan"].as_u64().unwrap_or(0), flags)
                })
                .collect();
            (p["ifname"].as_str().unwrap_or("").to_string(), vl)
        })
        .collect()
}

fn access_port_of(node: &Node, port: &str, vid: u64) {
    let all = vlans(node);
    let entry = all.iter().find(|(p, _)| p == port);
    let Some((_, vl)) = entry else {
        panic!("{port} not in bridge vlan show: {all:?}")
    };
    assert_eq!(vl.len(), 1, "{port} is in exactly one VLAN: {vl:?}");
    assert_eq!(vl[0].0, vid, "{port}: {vl:?}");
    for f in ["PVID", "Egress Untagged"] {
        assert!(
            vl[0].1.iter().any(|x| x == f),
            "{port} vlan {vid} lacks {f}: {vl:?}"
        );
    }
}

/// One ARP request from `ns` for `ip`: whether it was answered (L2 reachability, which
/// no nftables rule of netd decides: only the VLAN does).
fn arp_answered(ns: &Netns, ip: &str) -> bool {
    nsenter(
        Path::new(&ns.path()),
        &["busybox", "arping", "-c", "1", "-w", "1", "-I", "eth0", ip],
    )
    .ok()
}

fn vlans_isolate(mode: Mode) {
    let t0 = std::time::Instant::now();
    let lap = |what: &str| println!("{:?} {what}", t0.elapsed());
    let mut node = Node::new(mode);
    lap("node");
    if !vlan_filtering(&node) {
        skip_for_lane(
            &this_test(),
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        );
        return;
    }
    let br = bridge_name(mode);
    let c100 = conf(&node, "nv100", "10.77.100.0/24", &br, 100);
    let c200 = conf(&node, "nv200", "10.77.200.0/24", &br, 200);
    let (n1, n2, n3) = (container(), container(), container());
    lap("probe");
    let r1 = node.add("nv-c1", &n1, &c100);
    lap("add1");
    let r2 = node.add("nv-c2", &n2, &c100);
    let r3 = node.add("nv-c3", &n3, &c200);
    lap("add3");
    assert_eq!(r1["interfaces"][0]["name"], br.as_str());
    assert_eq!(r3["ips"][0]["gateway"], "10.77.200.1");
    // As the reference lists them: bridge, host veth, container interface, and the
    // gateway link last; the addresses are the container interface's.
    for (r, vid) in [(&r1, 100), (&r2, 100), (&r3, 200)] {
        let l = r["interfaces"].as_array().expect("interfaces");
        assert_eq!(l.len(), 4, "{r}");
        assert_eq!(l[2]["name"], "eth0", "{r}");
        assert_eq!(l[3]["name"], format!("{br}.{vid}").as_str(), "{r}");
        assert_eq!(r["ips"][0]["interface"], 2, "{r}");
    }

    // Kernel: one VLAN-filtering bridge; each container port is an access port of its
    // VLAN; the gateways are <bridge>.<vlan> with the gateway addresses.
    let l = node.host.sh(&format!("ip -d -j link show {br}"));
    let lv: Value = serde_json::from_str(&l.stdout).expect("ip -j");
    assert_eq!(lv[0]["linkinfo"]["info_data"]["vlan_filtering"], 1, "{lv}");
    for (r, vid) in [(&r1, 100), (&r2, 100), (&r3, 200)] {
        access_port_of(&node, r["interfaces"][1]["name"].as_str().unwrap(), vid);
    }
    for (vid, gw) in [(100, "10.77.100.1/24"), (200, "10.77.200.1/24")] {
        let a = node.host.sh(&format!("ip -j addr show dev {br}.{vid}"));
        assert!(
            a.stdout.contains(gw.split('/').next().unwrap()),
            "{br}.{vid}: {}",
            a.stdout
        );
    }

    // Packets: VLAN 100 containers reach each other and their gateway; the VLAN 200 one
    // reaches neither of them, by IP or by ARP (an ARP request is a broadcast, which the
    // bridge floods within the VLAN only); its own gateway it does reach.
    lap("kernel checks");
    let (a1, a2) = (ip_of(&r1), ip_of(&r2));
    let p = |ns: &Netns| Path::new(&ns.path()).to_path_buf();
    assert!(ping_from(&p(&n1), None, &a2), "vlan 100 -> vlan 100");
    assert!(ping_from(&p(&n2), None, &a1), "vlan 100 -> vlan 100");
    assert!(ping_from(&p(&n1), None, "10.77.100.1"), "vlan 100 -> its gateway");
    assert!(ping_from(&p(&n3), None, "10.77.200.1"), "vlan 200 -> its gateway");
    assert!(!ping_from(&p(&n3), None, &a1), "vlan 200 must not reach vlan 100");
    assert!(!ping_from(&p(&n3), None, &a2), "vlan 200 must not reach vlan 100");
    assert!(arp_answered(&n1, &a2), "ARP within vlan 100 (control)");
    assert!(!arp_answered(&n3, &a1), "ARP from vlan 200 answered by vlan 100");

    // CHECK with the result as prevResult.
    let mut check = c100.clone();
    check["prevResult"] = r1.clone();
    let (code, out, err) = node.exec("CHECK", "nv-c1", &n1.path(), "eth0", &check);
    assert_eq!(code, 0, "CHECK: {out} {err}");

    // Reconcile: a healthy VLAN network is left alone (daemon restart); a gateway
    // deleted behind netd's back is made again (daemon restart, or the plugin's next
    // exec, which notices it is missing), as an access port of its VLAN again.
    if mode == Mode::Delegating {
        node.host.restart();
        let info = node.host.client().get("/v1/info").expect("info");
        assert_eq!(info["reconcile"]["removed"], json!([]), "{info}");
        assert_eq!(info["reconcile"]["recreated"], json!([]), "{info}");
    }
    assert!(node.host.sh(&format!("ip link del {br}.100")).ok());
    match mode {
        Mode::Delegating => node.host.restart(),
        Mode::Standalone => {
            let (code, out, err) = node.exec("CHECK", "nv-c1", &n1.path(), "eth0", &check);
            assert_eq!(code, 0, "CHECK after the gateway was deleted: {out} {err}");
        }
    }
    access_port_of(&node, &netd::model::gateway_peer_name(&br, 100), 100);
    assert!(ping_from(&p(&n1), None, "10.77.100.1"), "gateway back");
    assert!(
        ping_from(&p(&n1), None, &a2),
        "vlan 100 -> vlan 100 after reconcile"
    );
    lap("packets, check, reconcile");
    // The network's VLAN is fixed: the same network name with another VLAN is code 7.
    let n4 = container();
    let mut other = c100.clone();
    other["vlan"] = json!(300);
    let (code, out, _) = node.exec("ADD", "nv-c4", &n4.path(), "eth0", &other);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("exists with vlan 100, not 300"),
        "{out}"
    );
    assert!(!n4.sh("ip link show eth0").ok());

    lap("mismatch");
    // DEL: no container port left on the bridge, no lease, no sandbox.
    for (cid, ns, c) in [
        ("nv-c1", &n1, &c100),
        ("nv-c2", &n2, &c100),
        ("nv-c3", &n3, &c200),
    ] {
        node.del(cid, &ns.path(), c);
    }
    lap("dels");
    assert!(
        node.settled_endpoint_links().is_empty(),
        "{:?}",
        node.endpoint_links()
    );
    lap("settled");
    let ports: Vec<String> = vlans(&node).into_iter().map(|(p, _)| p).collect();
    for r in [&r1, &r2, &r3] {
        let port = r["interfaces"][1]["name"].as_str().unwrap();
        assert!(!ports.iter().any(|p| p == port), "{port} left: {ports:?}");
    }
    assert!(node.sandboxes().is_empty());
    assert!(
        node.leases().values().all(|l| l.is_empty()),
        "{:?}",
        node.leases()
    );
}

/// `ip link add link eth0 name eth0.VID type vlan id VID` in `ns`, with `addr` (and
/// `mac`, when given), up.
fn vlan_device(ns: &Netns, vid: u16, addr: &str, mac: Option<&str>) {
    let mac = mac.map(|m| format!(" address {m}")).unwrap_or_default();
    let o = ns.sh(&format!(
        "ip link add link eth0 name eth0.{vid}{mac} type vlan id {vid} && \
         ip addr add {addr} dev eth0.{vid} && ip link set eth0.{vid} up"
    ));
    assert!(o.ok(), "VLAN device {vid}: {}", o.stderr);
}

fn trunk(mode: Mode) {
    let node = Node::new(mode);
    if !vlan_filtering(&node) {
        skip_for_lane(
            &this_test(),
            "this kernel has no bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
        );
        return;
    }
    let br = format!("{}t", bridge_name(mode));
    let c = node.conf(
        "nvtr",
        "10.77.110.0/24",
        json!({"bridge": br, "isGateway": true,
               "vlanTrunk": [{"id": 101}, {"minID": 200, "maxID": 201}]}),
    );
    let (t1, t2, t3) = (container(), container(), container());
    let r1 = node.add("nv-t1", &t1, &c);
    let r2 = node.add("nv-t2", &t2, &c);
    let r3 = node.add("nv-t3", &t3, &c);
    assert_eq!(r1["ips"][0]["gateway"], "10.77.110.1");

    // Kernel: the bridge filters by VLAN; every port is in VLAN 1 untagged and carries
    // 101, 200 and 201 tagged.
    let l = node.host.sh(&format!("ip -d -j link show {br}"));
    let lv: Value = serde_json::from_str(&l.stdout).expect("ip -j");
    assert_eq!(lv[0]["linkinfo"]["info_data"]["vlan_filtering"], 1, "{lv}");
    let all = vlans(&node);
    for r in [&r1, &r2, &r3] {
        let port = r["interfaces"][1]["name"].as_str().unwrap();
        let Some((_, vl)) = all.iter().find(|(p, _)| p == port) else {
            panic!("{port} not in bridge vlan show: {all:?}")
        };
        let vids: Vec<u64> = vl.iter().map(|(v, _)| *v).collect();
        assert_eq!(vids, vec![1, 101, 200, 201], "{port}: {vl:?}");
        assert!(vl[0].1.iter().any(|f| f == "PVID"), "{port}: {vl:?}");
        assert!(vl[1..].iter().all(|(_, f)| f.is_empty()), "tagged: {vl:?}");
    }

    let p = |ns: &Netns| Path::new(&ns.path()).to_path_buf();
    // Untagged: the network as ever.
    assert!(ping_from(&p(&t1), None, &ip_of(&r2)), "untagged");
    assert!(ping_from(&p(&t1), None, "10.77.110.1"), "untagged -> gateway");
    // Tagged, on the trunk's VLANs.
    vlan_device(&t1, 101, "192.168.101.1/24", None);
    vlan_device(&t2, 101, "192.168.101.2/24", None);
    vlan_device(&t1, 201, "192.168.201.1/24", None);
    vlan_device(&t2, 201, "192.168.201.2/24", None);
    assert!(ping_from(&p(&t1), None, "192.168.101.2"), "vlan 101 on the trunk");
    assert!(ping_from(&p(&t2), None, "192.168.201.1"), "vlan 201 on the trunk");
    // Not on a VLAN outside the trunk.
    vlan_device(&t1, 150, "192.168.150.1/24", None);
    vlan_device(&t2, 150, "192.168.150.2/24", None);
    assert!(
        !ping_from(&p(&t1), None, "192.168.150.2"),
        "vlan 150 is not in the trunk"
    );
    // A tagged frame from a MAC that is not the endpoint's is dropped.
    vlan_device(&t3, 101, "192.168.101.3/24", Some("02:00:00:00:00:99"));
    assert!(
        !ping_from(&p(&t3), None, "192.168.101.2"),
        "tagged frame from another MAC"
    );

    // The trunk is the network's: the same name with another one is code 7.
    let t4 = container();
    let mut other = c.clone();
    other["vlanTrunk"] = json!([{"id": 102}]);
    let (code, out, _) = node.exec("ADD", "nv-t4", &t4.path(), "eth0", &other);
    assert_eq!((code, out["code"].as_u64()), (1, Some(7)), "{out}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("vlan trunk 101,200-201, not 102"),
        "{out}"
    );
    assert!(!t4.sh("ip link show eth0").ok());

    for (cid, ns) in [("nv-t1", &t1), ("nv-t2", &t2), ("nv-t3", &t3)] {
        node.del(cid, &ns.path(), &c);
    }
    assert!(
        node.settled_endpoint_links().is_empty(),
        "{:?}",
        node.endpoint_links()
    );
    assert!(node.sandboxes().is_empty());
}

/// Everything the node's kernel and netd hold that a refused ADD could have left.
fn node_state(node: &Node) -> (Vec<String>, String, usize) {
    let links = node.host.sh("ip -j link show");
    let v: Value = serde_json::from_str(links.stdout.trim()).unwrap_or(json!([]));
    let names = v
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|l| l["ifname"].as_str().map(str::to_string))
        .collect();
    let rules = node.host.sh("nft list ruleset").stdout;
    (names, rules, node.sandboxes().len())
}

fn plain_kernel_refuses(mode: Mode) {
    let node = Node::new(mode);
    if vlan_filtering(&node) {
        skip_in_lane(
            &this_test(),
            "this kernel filters by VLAN on bridges (see cni_vlan_isolates_vlans_on_one_bridge)",
        );
        return;
    }
    let br = bridge_name(mode);
    let c = conf(&node, "nv100", "10.77.100.0/24", &br, 100);
    let ns = container();
    // A standalone plugin's first exec installs netd's (empty) tables whatever the
    // command: let a STATUS do that, so the state compared is the ADD's doing only.
    let _ = node.exec("STATUS", "nv-c0", "", "eth0", &c);
    let before = node_state(&node);
    let (code, out, err) = node.exec("ADD", "nv-c1", &ns.path(), "eth0", &c);
    assert_eq!((code, out["code"].as_u64()), (1, Some(2)), "{out} {err}");
    let msg = out["msg"].as_str().unwrap_or("");
    assert!(
        msg.contains("CONFIG_BRIDGE_VLAN_FILTERING") && !msg.contains('\n'),
        "{out}"
    );
    // Nothing changed: links, nftables, sandboxes, leases, the network itself.
    assert_eq!(node_state(&node), before);
    assert!(!before.1.contains("nv100") && !before.1.contains(&br));
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    assert!(!node.host.sh(&format!("ip link show {br}")).ok());
    assert_eq!(
        ns.sh("ip -o link show | wc -l").stdout.trim(),
        "1",
        "only lo in the container"
    );
    // netctl (the API's 501) says the same in one line, and changes nothing either.
    if mode == Mode::Delegating {
        let o = node.host.netctl(&[
            "network",
            "create",
            "nvx",
            "--subnet",
            "10.77.101.0/24",
            "-o",
            "vlan=5",
        ]);
        assert!(!o.ok(), "{o:?}");
        assert!(
            o.stderr.contains("CONFIG_BRIDGE_VLAN_FILTERING") && o.stderr.trim().lines().count() == 1,
            "{o:?}"
        );
        assert_eq!(node_state(&node), before);
    }
    // A trunk needs the same kernel feature.
    let mut trunk = c.clone();
    trunk.as_object_mut().unwrap().remove("vlan");
    trunk["vlanTrunk"] = json!([{"id": 101}]);
    let (code, out, err) = node.exec("ADD", "nv-c1", &ns.path(), "eth0", &trunk);
    assert_eq!((code, out["code"].as_u64()), (1, Some(2)), "{out} {err}");
    assert!(
        out["msg"]
            .as_str()
            .unwrap_or("")
            .contains("vlan trunk 101: this kernel has no bridge VLAN filtering"),
        "{out}"
    );
    assert_eq!(node_state(&node), before);
    assert!(node.leases().is_empty(), "{:?}", node.leases());
    // Without the key the same network works: only the VLAN is refused.
    let mut plain = c.clone();
    plain.as_object_mut().unwrap().remove("vlan");
    node.add("nv-c1", &ns, &plain);
    node.del("nv-c1", &ns.path(), &plain);
}

#[test]
fn cni_vlan_isolates_vlans_on_one_bridge_delegating() {
    if no_root() {
        return;
    }
    vlans_isolate(Mode::Delegating);
}

#[test]
fn cni_vlan_isolates_vlans_on_one_bridge_standalone() {
    if no_root() {
        return;
    }
    vlans_isolate(Mode::Standalone);
}

#[test]
fn cni_vlan_without_kernel_support_is_code_2_delegating() {
    if no_root() {
        return;
    }
    plain_kernel_refuses(Mode::Delegating);
}

#[test]
fn cni_vlan_without_kernel_support_is_code_2_standalone() {
    if no_root() {
        return;
    }
    plain_kernel_refuses(Mode::Standalone);
}

#[test]
fn cni_vlan_trunk_carries_tagged_vlans_delegating() {
    if no_root() {
        return;
    }
    trunk(Mode::Delegating);
}

#[test]
fn cni_vlan_trunk_carries_tagged_vlans_standalone() {
    if no_root() {
        return;
    }
    trunk(Mode::Standalone);
}
