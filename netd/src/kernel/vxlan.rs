//! Overlay networks' kernel side: the VXLAN port of a network's bridge
//! (`Step::EnsureVxlan`), the static FDB and neighbour entries that point each remote
//! endpoint at its node (`RemoteOps`), and the underlay MTU the overlay's MTU derives from.
//!
//! The FDB and neighbour entries change with the cluster, not with local operations, so
//! they are not plan steps of the engine: the cluster agent diffs what etcd says against
//! what it applied (`cluster::fdb`) and applies the difference here. Each entry is
//! idempotent (`replace`, and "already gone" on delete), so re-applying a diff after a
//! resync is harmless.

use std::net::{IpAddr, Ipv4Addr};

use super::linux::LinuxKernel;
use super::netlink::{LinkChange, Netlink, VxlanReq};
use super::KernelError;
use crate::plan::{Applied, VxlanSpec};

impl LinuxKernel {
    pub(super) fn ensure_vxlan(&self, v: &VxlanSpec) -> Result<Applied, KernelError> {
        let mut nl = self.nl();
        let bridge = nl
            .link_index(&v.bridge)?
            .ok_or_else(|| KernelError::Other(format!("bridge {} does not exist", v.bridge)))?;
        let found = match nl.link(&v.name)? {
            Some(l) if l.kind.as_deref() == Some("vxlan") => true,
            Some(_) => {
                return Err(KernelError::NotNetds {
                    name: v.name.clone(),
                    pick: "network name",
                })
            }
            None => {
                nl.add_vxlan(&VxlanReq {
                    name: &v.name,
                    vni: v.vni,
                    local: v.local,
                    port: v.port,
                    mtu: v.mtu,
                })?;
                false
            }
        };
        let res = nl.set_master(&v.name, bridge).and_then(|_| {
            nl.set_link(
                &v.name,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )
        });
        if let Err(e) = res {
            if !found {
                if let Err(e2) = nl.delete_link(&v.name) {
                    tracing::warn!(link = %v.name, error = %e2, "cleanup of failed vxlan failed");
                }
            }
            return Err(e);
        }
        Ok(if found { Applied::Found } else { Applied::Made })
    }
}

/// One change to the remote entries of an overlay network's VXLAN device.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum RemoteOp {
    /// FDB: frames to `mac` go to the node at `vtep`.
    FdbSet {
        mac: [u8; 6],
        vtep: Ipv4Addr,
    },
    FdbDel {
        mac: [u8; 6],
    },
    /// Neighbour: `ip` is at `mac` (the device answers ARP for it: `proxy`).
    NeighSet {
        ip: Ipv4Addr,
        mac: [u8; 6],
    },
    NeighDel {
        ip: Ipv4Addr,
    },
}

/// Applies `ops` to the VXLAN device `dev` in the calling thread's namespace. A missing
/// device is an error for additions (the datapath is not up yet) and nothing for
/// deletions.
pub fn apply_remote(dev: &str, ops: &[RemoteOp]) -> Result<(), KernelError> {
    let mut nl = Netlink::open()?;
    let Some(idx) = nl.link_index(dev)? else {
        if ops
            .iter()
            .all(|o| matches!(o, RemoteOp::FdbDel { .. } | RemoteOp::NeighDel { .. }))
        {
            return Ok(());
        }
        return Err(KernelError::Other(format!("vxlan device {dev} does not exist")));
    };
    for op in ops {
        match *op {
            RemoteOp::FdbSet { mac, vtep } => nl.fdb_replace(idx, mac, vtep)?,
            RemoteOp::FdbDel { mac } => nl.fdb_del(idx, mac)?,
            RemoteOp::NeighSet { ip, mac } => nl.neigh_replace(idx, ip, mac)?,
            RemoteOp::NeighDel { ip } => nl.neigh_del(idx, ip)?,
        }
    }
    Ok(())
}

/// A VXLAN device's own FDB entries with an IPv4 VTEP (MAC, VTEP), and the addresses
/// of its permanent neighbour entries.
pub type RemoteHeld = (Vec<([u8; 6], Ipv4Addr)>, Vec<Ipv4Addr>);

/// The remote entries `dev` holds (`RemoteHeld`); empty when the device is missing.
pub fn remote_entries(dev: &str) -> Result<RemoteHeld, KernelError> {
    let mut nl = Netlink::open()?;
    let Some(idx) = nl.link_index(dev)? else {
        return Ok((Vec::new(), Vec::new()));
    };
    let fdb = nl
        .fdb_entries(idx)?
        .into_iter()
        .filter_map(|(mac, dst)| match dst {
            Some(IpAddr::V4(v)) => Some((mac, v)),
            _ => None,
        })
        .collect();
    Ok((fdb, nl.permanent_neighbours(idx)?))
}

/// The MTU of the link holding `addr` in the calling thread's namespace: the underlay
/// the overlay's packets travel on.
pub fn mtu_of_addr(addr: Ipv4Addr) -> Result<u32, KernelError> {
    let mut nl = Netlink::open()?;
    let holder = nl
        .addresses()?
        .into_iter()
        .find(|a| a.net.ip() == IpAddr::V4(addr))
        .ok_or_else(|| KernelError::Other(format!("no link holds {addr}")))?;
    let link = nl
        .links()?
        .into_iter()
        .find(|l| l.index == holder.index)
        .ok_or_else(|| KernelError::Other(format!("the link holding {addr} is gone")))?;
    Ok(link.mtu)
}
