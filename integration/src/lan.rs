//! The LAN of the macvlan tests: a namespace (`ndmv-<pid>-<tag><n>`) holding the router
//! address `192.168.<k>.1/24` on `lan0`, joined by a veth to a host namespace whose end
//! (`mv<tag><pid><n>`) is the macvlan parent. Removed on drop.

use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::harness::sh;

static NEXT: AtomicUsize = AtomicUsize::new(0);

/// The LAN: a namespace with the router address, joined to the host by a veth whose host
/// end is the macvlan parent.
pub struct Lan {
    pub name: String,
    pub parent: String,
    pub router: String,
    pub subnet: String,
}

impl Lan {
    /// A LAN on 192.168.`k`.0/24 whose parent link is in the namespace named `host`;
    /// `tag` keeps the names of different test files apart.
    pub fn new(host: &str, k: u8, tag: &str) -> Lan {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let lan = Lan {
            name: format!("ndmv-{}-{tag}{n}", std::process::id()),
            parent: format!("mv{tag}{}{n}", std::process::id() % 100_000),
            router: format!("192.168.{k}.1"),
            subnet: format!("192.168.{k}.0/24"),
        };
        // Both ends are made directly in their namespaces: nothing in the init one.
        let o = sh(&format!(
            "set -e; ip netns add {lan}; ip -n {lan} link set lo up
             ip link add {p} netns {host} type veth peer name lan0 netns {lan}
             ip -n {host} link set {p} up
             ip -n {lan} addr add {r}/24 dev lan0; ip -n {lan} link set lan0 up",
            lan = lan.name,
            p = lan.parent,
            r = lan.router,
        ));
        assert!(o.ok(), "LAN setup: {}", o.stderr);
        // Carrier comes up a moment after `link set up`; tests compare link state.
        let up = sh(&format!(
            "for i in $(seq 200); do ip -n {lan} link show lan0 | grep -q 'state UP' && exit 0; sleep 0.01; done; exit 1",
            lan = lan.name
        ));
        assert!(up.ok(), "lan0 has no carrier");
        lan
    }

    pub fn netns(&self) -> PathBuf {
        PathBuf::from(format!("/run/netns/{}", self.name))
    }
}

impl Drop for Lan {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.name]).status();
    }
}
