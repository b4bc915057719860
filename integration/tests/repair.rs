//! The reconcile loop on a real kernel: a sandbox's host veth, the bridge, the bridge's
//! address, a sandbox's default route, netd's nftables table and one of its chains,
//! each deleted behind the daemon's back, come back on their own, and the daemon logs
//! each repair. Then 20 deletions of a veth, each timed from the deletion to the repair
//! seen in the kernel (polled), median and max printed: a measurement, not a deadline
//! (each only has to come back within 10 s). Traffic between the sandboxes flows after
//! the repairs, and an idle daemon does not repair anything (its own changes do not
//! wake a loop of repairs).

use std::path::Path;
use std::time::{Duration, Instant};

use integration::harness::Host;
use integration::skip::no_root;
use netd::kernel::netlink::Netlink;

/// Generous: the loop is event-driven and repairs in well under a second here.
const BOUND: Duration = Duration::from_secs(10);

/// Polls `ok` every 5 ms until it holds; the time it took. Panics after `BOUND`.
fn wait_for(what: &str, h: &Host, mut ok: impl FnMut() -> bool) -> Duration {
    let t0 = Instant::now();
    while !ok() {
        assert!(
            t0.elapsed() < BOUND,
            "{what}: not repaired within {BOUND:?}; log:\n{}",
            h.log()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    t0.elapsed()
}

/// Whether `link` exists in the namespace of `nl` and is a port of `bridge`.
fn port_of(nl: &mut Netlink, link: &str, bridge: &str) -> bool {
    let Ok(Some(l)) = nl.link(link) else {
        return false;
    };
    let Ok(Some(b)) = nl.link_index(bridge) else {
        return false;
    };
    l.master == Some(b) && l.up
}

fn repairs(h: &Host) -> usize {
    h.log().matches("repaired: ").count()
}

fn sh_ok(h: &Host, cmd: &str) {
    let o = h.sh(cmd);
    assert!(o.ok(), "{cmd}: {}", o.stderr);
}

#[test]
fn objects_deleted_behind_netds_back_are_repaired() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "front", "--subnet", "10.97.0.0/24"]);
    h.ctl(&["sandbox", "create", "a", "--network", "front"]);
    h.ctl(&["sandbox", "create", "b", "--network", "front"]);
    let net = h.client().get("/v1/networks/front").expect("inspect network");
    let bridge = net["bridge"].as_str().expect("bridge").to_string();
    let veth = |s: &str| {
        h.sandbox(s)["endpoints"][0]["host_ifname"]
            .as_str()
            .expect("host_ifname")
            .to_string()
    };
    let (va, vb) = (veth("a"), veth("b"));
    let ip_b = h.ip("b", "front");
    assert!(h.ping("a", &ip_b), "a reaches b before any deletion");
    let mut nl = Netlink::open_in(&h.netns()).expect("route socket in the host");
    let has = |cmd: &str| h.sh(cmd).ok();

    // One at a time: each object, its repair, and the daemon's word for it.
    let mut seen = repairs(&h);
    let mut step = |what: &str, delete: &str, back: &mut dyn FnMut() -> bool| {
        sh_ok(&h, delete);
        let took = wait_for(what, &h, back);
        wait_for(&format!("{what}: the log"), &h, || repairs(&h) > seen);
        seen = repairs(&h);
        println!("{what}: repaired after {took:?}");
    };
    step("host veth", &format!("ip link del {va}"), &mut || {
        port_of(&mut nl, &va, &bridge)
    });
    step("bridge", &format!("ip link del {bridge}"), &mut || {
        port_of(&mut nl, &va, &bridge)
            && port_of(&mut nl, &vb, &bridge)
            && has(&format!("ip -4 addr show dev {bridge} | grep -q 10.97.0.1/24"))
    });
    step(
        "bridge address",
        &format!("ip addr del 10.97.0.1/24 dev {bridge}"),
        &mut || has(&format!("ip -4 addr show dev {bridge} | grep -q 10.97.0.1/24")),
    );
    let sb_a = h.sb("a");
    let default_route = |p: &Path| {
        h.sh(&format!("nsenter --net={} ip -4 route show default", p.display()))
            .stdout
            .contains("via 10.97.0.1")
    };
    step(
        "sandbox default route",
        &format!("nsenter --net={} ip route del default", sb_a.display()),
        &mut || default_route(&sb_a),
    );
    step("nft table inet netd", "nft delete table inet netd", &mut || {
        has("nft list chain inet netd forward && nft list chain inet netd postrouting")
    });
    step(
        "nft chain inet netd postrouting",
        "nft flush chain inet netd postrouting && nft delete chain inet netd postrouting",
        &mut || has("nft list chain inet netd postrouting"),
    );
    let log = h.log();
    for what in [
        format!("repaired: recreated veth {va} of sandbox a on network front"),
        format!("repaired: recreated bridge {bridge}"),
        format!("repaired: recreated address 10.97.0.1/24 on bridge {bridge}"),
        "repaired: recreated addresses and routes of eth0 in sandbox a (network front)".into(),
        "repaired: recreated nftables table inet netd".into(),
        "repaired: recreated nftables chain inet netd postrouting".into(),
    ] {
        assert!(log.contains(&what), "no {what:?} in the log:\n{log}");
    }
    assert!(h.ping("a", &ip_b), "a reaches b after the repairs");
    assert!(h.ping("b", &h.ip("a", "front")), "b reaches a after the repairs");

    // 20 deletions of b's veth, each timed to its repair.
    let mut times = Vec::new();
    for _ in 0..20 {
        // From quiet: the reports of the last repair (and of the pings) have been
        // handled, so the deletion opens a window of its own.
        std::thread::sleep(Duration::from_millis(300));
        assert!(port_of(&mut nl, &vb, &bridge));
        nl.delete_link(&vb).expect("delete veth");
        let t0 = Instant::now();
        while !port_of(&mut nl, &vb, &bridge) {
            assert!(
                t0.elapsed() < BOUND,
                "veth not repaired within {BOUND:?}:\n{}",
                h.log()
            );
            std::thread::sleep(Duration::from_millis(1));
        }
        times.push(t0.elapsed());
        // The first ping may go unanswered: a new veth's carrier reaches the bridge
        // through the kernel's link watch, which can hold it back for up to a second.
        let first = h.ping("a", &ip_b);
        if !first {
            println!("deletion {}: first ping after the repair lost", times.len());
        }
        assert!(
            first || h.ping("a", &ip_b) || h.ping("a", &ip_b),
            "a does not reach b after deletion {}:\n{}",
            times.len(),
            h.log()
        );
    }
    times.sort();
    println!(
        "veth repair over {} deletions: median {:?}, max {:?} (min {:?})",
        times.len(),
        times[times.len() / 2],
        times[times.len() - 1],
        times[0]
    );

    // Idle: netd's own repairs have settled, and nothing more is repaired.
    std::thread::sleep(Duration::from_millis(500));
    let settled = repairs(&h);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        repairs(&h),
        settled,
        "an idle daemon repairs nothing:\n{}",
        h.log()
    );
    h.assert_consistent();
}
