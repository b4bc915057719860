//! macvlan and ipvlan children (`Step::CreateMacvlan`) and the look inside a sandbox
//! that reconcile needs for them: unlike a veth, such an endpoint leaves nothing in the
//! host namespace, so whether it exists can only be seen from inside the sandbox.

use std::os::fd::{AsFd, BorrowedFd};
use std::path::Path;

use super::linux::LinuxKernel;
use netlink_packet_route::link::{IpVlanFlags, IpVlanMode, MacVlanMode};

use super::netlink::{ipvlan_flags_from_name, ipvlan_mode_from_name, mode_from_name, Netlink};
use super::{netns, KernelError, OwnedLink};
use crate::plan::{ChildKind, MacvlanSpec, SandboxSide};

const OWNED_PREFIX: &str = "netd:";

/// What a child is made of, checked before anything is made.
#[derive(Clone, Copy)]
enum Child {
    Macvlan(MacVlanMode, Option<[u8; 6]>),
    Ipvlan(IpVlanMode, IpVlanFlags),
}

impl Child {
    fn of(m: &MacvlanSpec) -> Result<Child, KernelError> {
        let bad =
            |what: &str, v: &str| KernelError::Other(format!("unknown {} {what} {v:?}", m.kind.as_str()));
        Ok(match m.kind {
            ChildKind::Macvlan => {
                let mode = mode_from_name(&m.mode).ok_or_else(|| bad("mode", &m.mode))?;
                // A passthru child takes its parent's MAC whatever we ask for.
                Child::Macvlan(mode, (m.mode != "passthru").then_some(m.mac))
            }
            ChildKind::Ipvlan => Child::Ipvlan(
                ipvlan_mode_from_name(&m.mode).ok_or_else(|| bad("mode", &m.mode))?,
                ipvlan_flags_from_name(&m.flag).ok_or_else(|| bad("flag", &m.flag))?,
            ),
        })
    }

    /// `ip link add NAME link #PARENT [netns NS] type macvlan|ipvlan ...`.
    fn add(
        self,
        nl: &mut Netlink,
        name: &str,
        parent: u32,
        mtu: u32,
        ns: Option<BorrowedFd<'_>>,
    ) -> Result<(), KernelError> {
        match self {
            Child::Macvlan(mode, mac) => nl.add_macvlan(name, parent, mode, mtu, mac, ns),
            Child::Ipvlan(mode, flags) => nl.add_ipvlan(name, parent, mode, flags, mtu, ns),
        }
    }
}

impl LinuxKernel {
    /// Created from the host namespace (where the parent is) directly inside the sandbox
    /// under `tmp_name`, then renamed `ethN` and marked there in one request, then
    /// configured. Not made here and moved: a move costs an RCU grace period. A crash
    /// leaves either an unmarked child under netd's temporary name or a marked one,
    /// both of which reconcile recognises. On any failure the child is deleted again.
    pub(super) fn create_macvlan(&self, m: &MacvlanSpec) -> Result<(), KernelError> {
        let child = Child::of(m)?;
        let Some(side) = &m.sandbox else {
            return self.create_host_macvlan(m, child);
        };
        if m.parent_in_sandbox {
            return create_next_to_parent(m, side, child);
        }
        // Opened before anything is created: a missing namespace fails cleanly.
        let ns = netns::open(&side.netns)?;
        std::thread::scope(|s| {
            // Entering the sandbox for a socket (a thread spawn) overlaps the create.
            let sandbox = netns::spawn_in(s, &side.netns, &ns, Netlink::open);
            {
                let mut nl = self.nl();
                let parent = nl
                    .link(&m.parent)?
                    .ok_or_else(|| KernelError::NoParent(m.parent.clone()))?;
                child.add(&mut nl, &m.tmp_name, parent.index, m.mtu, Some(ns.as_fd()))?;
            }
            let mut sb = match netns::join_scoped(&side.netns, sandbox).and_then(|r| r) {
                Ok(sb) => sb,
                Err(e) => {
                    // Without a socket inside, the only way to the child is a new one.
                    if let Err(e2) =
                        Netlink::open_in(&side.netns).and_then(|mut s| s.delete_link(&m.tmp_name))
                    {
                        tracing::warn!(link = %m.tmp_name, error = %e2, "cleanup of failed macvlan failed");
                    }
                    return Err(e);
                }
            };
            finish_in_sandbox(&mut sb, m, side)
        })
    }

    /// Docker's: made and marked in the host namespace, left down; dockerd moves it into
    /// the container and configures it.
    fn create_host_macvlan(&self, m: &MacvlanSpec, child: Child) -> Result<(), KernelError> {
        let mut nl = self.nl();
        let parent = nl
            .link(&m.parent)?
            .ok_or_else(|| KernelError::NoParent(m.parent.clone()))?;
        child.add(&mut nl, &m.tmp_name, parent.index, m.mtu, None)?;
        let res = nl.set_alias(&m.tmp_name, &m.alias);
        if res.is_err() {
            if let Err(e) = nl.delete_link(&m.tmp_name) {
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
                // An unmarked child under netd's temporary name: a create cut short.
                // Reported with an empty alias, which no endpoint explains.
                if is_unmarked_tmp(&l) {
                    return Some(OwnedLink {
                        name: l.name,
                        alias: String::new(),
                        kind: l.kind.clone().unwrap_or_default(),
                        master: None,
                    });
                }
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

/// A macvlan or ipvlan child a crash caught between its creation and its marking: unmarked,
/// under netd's temporary name (`ndm<part>-<4 hex>`, see
/// `model::macvlan_tmp_name`). Nothing else makes links of that shape.
pub(super) fn is_unmarked_tmp(l: &super::netlink::Link) -> bool {
    let Some(rest) = l.name.strip_prefix("ndm") else {
        return false;
    };
    let hash = rest.rsplit_once('-').map(|(_, h)| h).unwrap_or_default();
    l.alias.is_none()
        && matches!(l.kind.as_deref(), Some("macvlan" | "ipvlan"))
        && hash.len() == 4
        && hash.bytes().all(|b| b.is_ascii_hexdigit())
}

/// The parent is a link of the sandbox's namespace (the reference plugins'
/// `linkInContainer`): the child is made there beside it, under the same temporary name
/// (a crash leaves what reconcile recognises), and finished as any other.
fn create_next_to_parent(m: &MacvlanSpec, side: &SandboxSide, child: Child) -> Result<(), KernelError> {
    let mut sb = Netlink::open_in(&side.netns)?;
    let parent = sb.link(&m.parent)?.ok_or_else(|| {
        KernelError::NoParent(format!(
            "{} in the sandbox's namespace {}",
            m.parent,
            side.netns.display()
        ))
    })?;
    child.add(&mut sb, &m.tmp_name, parent.index, m.mtu, None)?;
    finish_in_sandbox(&mut sb, m, side)
}

/// The child `m.tmp_name`, inside the sandbox (`sb`): renamed `ethN` and marked in one
/// request, configured, then marked as done; deleted again on any failure.
fn finish_in_sandbox(sb: &mut Netlink, m: &MacvlanSpec, side: &SandboxSide) -> Result<(), KernelError> {
    let mut name = m.tmp_name.as_str();
    let res = (|| {
        let index = sb.index_rcu(&m.tmp_name)?.ok_or_else(|| KernelError::Vanished {
            what: format!("macvlan {}", m.tmp_name),
            when: "after creation",
        })?;
        // Marked as being made until configured (`driver::creating_alias`).
        sb.rename_and_mark(index, &side.ifname, &crate::driver::creating_alias(&m.alias))?;
        name = side.ifname.as_str();
        configure(sb, side)?;
        sb.set_alias(&side.ifname, &m.alias)
    })();
    if res.is_err() {
        if let Err(e) = sb.delete_link(name) {
            tracing::warn!(link = %name, error = %e, "cleanup of failed macvlan failed");
        }
    }
    res
}

/// Up, addresses, routes: what a sandbox's interface needs once it is there.
fn configure(sb: &mut Netlink, side: &SandboxSide) -> Result<(), KernelError> {
    let index = sb.link_index(&side.ifname)?.ok_or_else(|| KernelError::Netlink {
        op: format!("configure {} in {}", side.ifname, side.netns.display()),
        errno: Some(nix::errno::Errno::ENODEV),
        msg: "link not found after the move".into(),
    })?;
    sb.configure_sandbox_link(index, &side.ifname, &side.addrs, side.gw4, side.gw6, &side.routes)
}
