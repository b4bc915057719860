//! What ipvlan networks need of the kernel beyond their children (`kernel::macvlan`
//! makes those): the 802.1Q parent of a dotted `-o parent=eth0.10`
//! (`Step::EnsureVlanParent`), the dummy parent of an internal network
//! (`Step::EnsureDummyParent`), and the probes for ipvlan, 802.1Q and dummy links.

use std::sync::OnceLock;

use netlink_packet_route::link::InfoKind;

use super::linux::LinuxKernel;
use super::netlink::{LinkChange, Netlink};
use super::KernelError;
use crate::plan::{Applied, DummyParentSpec, VlanParentSpec};

/// Whether the kernel has links of `kind`, asked once per process (a property of the
/// kernel, the same in every namespace).
pub(super) fn probe(nl: &mut Netlink, kind: InfoKind) -> Result<bool, KernelError> {
    static IPVLAN: OnceLock<bool> = OnceLock::new();
    static VLAN: OnceLock<bool> = OnceLock::new();
    static DUMMY: OnceLock<bool> = OnceLock::new();
    let cell = match kind {
        InfoKind::IpVlan => &IPVLAN,
        InfoKind::Dummy => &DUMMY,
        _ => &VLAN,
    };
    if let Some(s) = cell.get() {
        return Ok(*s);
    }
    let has = nl.has_link_kind(kind)?;
    Ok(*cell.get_or_init(|| has))
}

impl LinuxKernel {
    /// An existing link of the name is used as it is (someone's, or ours from before):
    /// `Applied::Found`, never undone. A missing one is made on `v.link` with VLAN ID
    /// `v.id`, marked and up; deleted again when a later part fails.
    pub(super) fn ensure_vlan_parent(&self, v: &VlanParentSpec) -> Result<Applied, KernelError> {
        let mut nl = self.nl();
        if nl.link(&v.name)?.is_some() {
            return Ok(Applied::Found);
        }
        let link = nl
            .link_index(&v.link)?
            .ok_or_else(|| KernelError::NoParent(v.link.clone()))?;
        nl.add_vlan_link(&v.name, link, v.id)?;
        let res = nl.set_alias(&v.name, &v.alias).and_then(|_| {
            nl.set_link(
                &v.name,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )
        });
        if let Err(e) = res {
            if let Err(e2) = nl.delete_link(&v.name) {
                tracing::warn!(link = %v.name, error = %e2, "cleanup of failed VLAN parent failed");
            }
            return Err(e);
        }
        Ok(Applied::Made)
    }

    /// As `ensure_vlan_parent`, for an internal network's dummy parent: an existing link
    /// of the name is used as it is; a missing one is made, marked and up.
    pub(super) fn ensure_dummy_parent(&self, d: &DummyParentSpec) -> Result<Applied, KernelError> {
        let mut nl = self.nl();
        if nl.link(&d.name)?.is_some() {
            return Ok(Applied::Found);
        }
        nl.add_dummy_link(&d.name)?;
        let res = nl.set_alias(&d.name, &d.alias).and_then(|_| {
            nl.set_link(
                &d.name,
                &LinkChange {
                    up: Some(true),
                    ..Default::default()
                },
            )
        });
        if let Err(e) = res {
            if let Err(e2) = nl.delete_link(&d.name) {
                tracing::warn!(link = %d.name, error = %e2, "cleanup of failed dummy parent failed");
            }
            return Err(e);
        }
        Ok(Applied::Made)
    }
}
