//! macvlan children (`Step::CreateMacvlan`) and the look inside a sandbox that reconcile
//! needs for them: unlike a veth, a macvlan endpoint leaves nothing in the host
//! namespace, so whether it exists can only be seen from inside the sandbox.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::Path;

use super::linux::LinuxKernel;
use super::netlink::{mode_from_name, Netlink};
use super::{netns, KernelError, OwnedLink};
use crate::plan::{MacvlanSpec, SandboxSide};

const OWNED_PREFIX: &str = "netd:";

impl LinuxKernel {
    /// Created under `tmp_name` in the host namespace (where the parent is), marked as
    /// netd's at once (so a crash from then on leaves a link reconcile recognises), then
    /// moved into the sandbox and renamed in one request, and configured there. On any
    /// failure the child is deleted again, wherever it is by then.
    pub(super) fn create_macvlan(&self, m: &MacvlanSpec) -> Result<(), KernelError> {
        let mode = mode_from_name(&m.mode)
            .ok_or_else(|| KernelError::Other(format!("unknown macvlan mode {:?}", m.mode)))?;
        // Opened before anything is created: a missing namespace fails cleanly.
        let ns = match &m.sandbox {
            Some(sb) => Some(netns::open(&sb.netns)?),
            None => None,
        };
        let mut nl = self.nl();
        let parent = nl
            .link(&m.parent)?
            .ok_or_else(|| KernelError::Other(format!("macvlan parent interface {} not found", m.parent)))?;
        // A passthru child takes its parent's MAC whatever we ask for.
        let mac = (m.mode != "passthru").then_some(m.mac);
        nl.add_macvlan(&m.tmp_name, parent.index, mode, m.mtu, mac)?;
        let mut moved = false;
        let res = (|| {
            nl.set_alias(&m.tmp_name, &m.alias)?;
            let (Some(side), Some(ns)) = (&m.sandbox, &ns) else {
                // Docker's: left down in the host namespace; dockerd moves it.
                return Ok(());
            };
            let index = nl.link_index(&m.tmp_name)?.ok_or_else(|| {
                KernelError::Other(format!("macvlan {} vanished after creation", m.tmp_name))
            })?;
            nl.move_link(index, ns.as_fd(), &side.ifname)?;
            moved = true;
            configure(&mut Netlink::open_in(&side.netns)?, side)
        })();
        if res.is_err() {
            let cleanup = match (&m.sandbox, moved) {
                (Some(side), true) => {
                    Netlink::open_in(&side.netns).and_then(|mut s| s.delete_link(&side.ifname))
                }
                // The kernel moves first and renames after: when the new name is taken
                // in the sandbox, the move has happened and the child sits there under
                // its temporary name.
                (Some(side), false) => match nl.delete_link(&m.tmp_name) {
                    Ok(false) if netns::is_alive(&side.netns) => {
                        Netlink::open_in(&side.netns).and_then(|mut s| s.delete_link(&m.tmp_name))
                    }
                    other => other,
                },
                (None, _) => nl.delete_link(&m.tmp_name),
            };
            if let Err(e) = cleanup {
                tracing::warn!(link = %m.tmp_name, error = %e, "cleanup of failed macvlan failed");
            }
        }
        res
    }

    /// Links inside the namespace at `path` whose alias starts with `netd:`.
    pub(super) fn owned_links_in_netns(&self, path: &Path) -> Result<Vec<OwnedLink>, KernelError> {
        if !netns::is_alive(path) {
            return Ok(Vec::new());
        }
        Ok(Netlink::open_in(path)?
            .links()?
            .into_iter()
            .filter_map(|l| {
                let alias = l.alias.filter(|a| a.starts_with(OWNED_PREFIX))?;
                Some(OwnedLink {
                    name: l.name,
                    alias,
                    kind: l.kind.unwrap_or_default(),
                    master: None,
                })
            })
            .collect())
    }
}

/// A macvlan child a crash caught between its creation and its marking: unmarked, in
/// the host namespace, under netd's temporary name (`ndm<part>-<4 hex>`, see
/// `model::macvlan_tmp_name`). Nothing else makes links of that shape.
pub(super) fn is_unmarked_tmp(l: &super::netlink::Link) -> bool {
    let Some(rest) = l.name.strip_prefix("ndm") else {
        return false;
    };
    let hash = rest.rsplit_once('-').map(|(_, h)| h).unwrap_or_default();
    l.alias.is_none()
        && l.kind.as_deref() == Some("macvlan")
        && hash.len() == 4
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Up, addresses, default routes: what a sandbox's interface needs once it is there.
fn configure(sb: &mut Netlink, side: &SandboxSide) -> Result<(), KernelError> {
    let index = sb.link_index(&side.ifname)?.ok_or_else(|| KernelError::Netlink {
        op: format!("configure {} in {}", side.ifname, side.netns.display()),
        msg: "link not found after the move".into(),
    })?;
    // Up before the routes: a gateway route on a down link is refused (ENETDOWN).
    sb.set_up(&side.ifname)?;
    for a in &side.addrs {
        sb.add_address(index, *a)?;
    }
    if let Some(gw) = side.gw4 {
        sb.add_default_route(IpAddr::V4(gw), Some(index))?;
    }
    if let Some(gw) = side.gw6 {
        sb.add_default_route(IpAddr::V6(gw), Some(index))?;
    }
    Ok(())
}
