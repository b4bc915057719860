//! VLAN networks in the kernel: the VLAN-filtering bridge, the gateway veth
//! (`Step::EnsureVlanGateway`), a port's VLAN, and the probe for
//! CONFIG_BRIDGE_VLAN_FILTERING.

use std::sync::OnceLock;

use ipnetwork::IpNetwork;

use super::linux::LinuxKernel;
use super::netlink::{DefaultVlan, LinkChange, Netlink, VethReq, VlanBridge};
use super::{sysctl, KernelError};
use crate::plan::{Applied, BridgeSpec, VlanGatewaySpec};

fn unsupported() -> KernelError {
    KernelError::Unsupported("bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING is not set)")
}

/// Whether bridge `b` filters by VLAN, and its default VLAN if so.
pub(super) fn default_vlan(b: &BridgeSpec) -> Option<DefaultVlan> {
    if b.vlan_filtering {
        Some(DefaultVlan::None)
    } else if b.trunk {
        Some(DefaultVlan::One)
    } else {
        None
    }
}

/// Creates a VLAN-filtering bridge (see `Netlink::add_vlan_bridge`).
pub(super) fn add_vlan_bridge(
    nl: &mut Netlink,
    name: &str,
    mtu: u32,
    mac: [u8; 6],
    default: DefaultVlan,
) -> Result<(), KernelError> {
    match nl.add_vlan_bridge(name, mtu, Some(mac), default)? {
        VlanBridge::Created => Ok(()),
        VlanBridge::Unsupported => Err(unsupported()),
    }
}

/// Puts host link `port` (a bridge port) in VLAN `vlan`, when there is one, and adds the
/// `trunk` VLANs to it tagged.
pub(super) fn port_vlan(
    nl: &mut Netlink,
    port: &str,
    vlan: Option<u16>,
    trunk: &[(u16, u16)],
) -> Result<(), KernelError> {
    if vlan.is_none() && trunk.is_empty() {
        return Ok(());
    }
    let index = nl.link_index(port)?.ok_or_else(|| KernelError::Vanished {
        what: format!("port {port}"),
        when: "before its VLAN was set",
    })?;
    if let Some(vid) = vlan {
        nl.set_port_vlan(index, vid)?;
    }
    nl.add_port_trunk(index, trunk)
}

/// Whether the kernel filters by VLAN on bridges: creating a bridge with
/// `vlan_filtering 1` fails with EOPNOTSUPP when it does not. Asked once per process
/// (it is a property of the kernel, the same in every namespace); the probe bridge is
/// deleted at once.
pub(super) fn probe(nl: &mut Netlink) -> Result<bool, KernelError> {
    static SUPPORTED: OnceLock<bool> = OnceLock::new();
    if let Some(s) = SUPPORTED.get() {
        return Ok(*s);
    }
    let name = format!("ndvprobe{}", std::process::id() % 1_000_000);
    // One left by a process of the same PID that died mid-probe would make this EEXIST.
    nl.delete_link(&name)?;
    let ok = match nl.add_vlan_bridge(&name, 0, None, DefaultVlan::None)? {
        VlanBridge::Created => {
            nl.delete_link(&name)?;
            true
        }
        VlanBridge::Unsupported => false,
    };
    Ok(*SUPPORTED.get_or_init(|| ok))
}

impl LinuxKernel {
    /// The gateway veth of a VLAN network: `g.peer` joins the bridge as an access port of
    /// `g.vlan`, `g.name` stays in the host namespace with the gateway addresses. An
    /// idempotent "ensure" (reconcile runs it for every network): an existing pair that
    /// is ours is brought in line (`Applied::Found`). A new pair is deleted again on any
    /// failure.
    pub(super) fn ensure_vlan_gateway(&self, g: &VlanGatewaySpec) -> Result<Applied, KernelError> {
        let mut nl = self.nl();
        let existing = nl.link(&g.name)?;
        if let Some(l) = &existing {
            if l.kind.as_deref() != Some("veth") || l.alias.as_deref() != Some(g.alias.as_str()) {
                return Err(KernelError::NotNetds {
                    name: g.name.clone(),
                    pick: "bridge name",
                });
            }
        }
        let bridge = nl.link_index(&g.bridge)?.ok_or_else(|| KernelError::Netlink {
            op: format!("add veth {}", g.peer),
            errno: Some(nix::errno::Errno::ENODEV),
            msg: format!("bridge {} does not exist", g.bridge),
        })?;
        if existing.is_none() {
            nl.add_veth(&VethReq {
                name: &g.peer,
                mtu: g.mtu,
                master: Some(bridge),
                up: false,
                peer_name: &g.name,
                peer_netns: None,
                peer_mac: Some(super::linux::bridge_mac(&g.name)),
            })?;
        }
        let res = self.finish_vlan_gateway(&mut nl, g, bridge);
        if res.is_err() && existing.is_none() {
            if let Err(e) = nl.delete_link(&g.peer) {
                tracing::warn!(link = %g.peer, error = %e, "cleanup of failed VLAN gateway failed");
            }
        }
        res.map(|_| match existing {
            Some(_) => Applied::Found,
            None => Applied::Made,
        })
    }

    fn finish_vlan_gateway(
        &self,
        nl: &mut Netlink,
        g: &VlanGatewaySpec,
        bridge: u32,
    ) -> Result<(), KernelError> {
        // Both ends marked: a crash from here on leaves links reconcile recognises.
        for l in [&g.peer, &g.name] {
            nl.set_alias(l, &g.alias)?;
        }
        nl.set_master(&g.peer, bridge)?;
        port_vlan(nl, &g.peer, Some(g.vlan), &[])?;
        let v = |on: bool| if on { "1" } else { "0" }.to_string();
        let conf6 = |l: &str, k: &str| format!("net/ipv6/conf/{l}/{k}");
        let mut items = vec![
            // The port carries no address; the gateway link has IPv6 only if the network does.
            (conf6(&g.peer, "disable_ipv6"), v(true), true),
            (conf6(&g.name, "disable_ipv6"), v(!g.ipv6), !g.ipv6),
            // Published ports reached on 127.0.0.1 are routed out of the gateway link (see
            // `configure_bridge`, which does the same for a bridge holding the gateway).
            (format!("net/ipv4/conf/{}/route_localnet", g.name), v(true), false),
        ];
        if g.ipv6 {
            items.push((conf6(&g.name, "accept_ra"), v(false), false));
        }
        sysctl::write_all_in(self.host_thread(), &items)?;
        let index = nl.link_index(&g.name)?.ok_or_else(|| KernelError::Vanished {
            what: g.name.clone(),
            when: "while configuring it",
        })?;
        let have: Vec<IpNetwork> = nl
            .addresses()?
            .into_iter()
            .filter(|a| a.index == index && a.scope == 0)
            .map(|a| a.net)
            .collect();
        for stale in have.iter().filter(|n| !g.addrs.contains(n)) {
            nl.del_address(index, *stale)?;
        }
        for want in g.addrs.iter().filter(|n| !have.contains(n)) {
            nl.add_address(index, *want)?;
        }
        for l in [&g.peer, &g.name] {
            nl.set_link(
                l,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )?;
        }
        Ok(())
    }
}
