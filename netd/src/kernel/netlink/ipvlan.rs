//! ipvlan and 802.1Q requests: `ip link add NAME link PARENT [netns NS] type ipvlan mode
//! MODE FLAG`, `ip link add NAME link LINK type vlan id ID`, and the probes that ask the
//! kernel whether it has either kind of link at all.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoIpVlan, InfoKind, InfoVlan, IpVlanFlags, IpVlanMode, LinkAttribute, LinkInfo, LinkMessage,
};
use netlink_packet_route::RouteNetlinkMessage;
use nix::errno::Errno;

use super::{check_ifname, Fail, Netlink};
use crate::kernel::KernelError;

/// Docker's mode names, which are the kernel's.
pub fn ipvlan_mode_from_name(mode: &str) -> Option<IpVlanMode> {
    Some(match mode {
        "l2" => IpVlanMode::L2,
        "l3" => IpVlanMode::L3,
        "l3s" => IpVlanMode::L3S,
        _ => return None,
    })
}

/// Docker's flag names: `bridge` is no flag (children talk to each other on the parent).
pub fn ipvlan_flags_from_name(flag: &str) -> Option<IpVlanFlags> {
    Some(match flag {
        "bridge" => IpVlanFlags::empty(),
        "private" => IpVlanFlags::Private,
        "vepa" => IpVlanFlags::Vepa,
        _ => return None,
    })
}

impl Netlink {
    /// `ip link add NAME link #PARENT [netns NS] [mtu M] type ipvlan mode MODE FLAG`, left
    /// down; created directly in NS as `add_macvlan` does. No address: an ipvlan child
    /// has its parent's.
    pub fn add_ipvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: IpVlanMode,
        flags: IpVlanFlags,
        mtu: u32,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<(), KernelError> {
        let op = || format!("add ipvlan {name} link #{parent} mode {mode}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Link(parent));
        if let Some(ns) = netns {
            m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        }
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::IpVlan),
            LinkInfo::Data(InfoData::IpVlan(vec![
                InfoIpVlan::Mode(mode),
                InfoIpVlan::Flags(flags),
            ])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link add NAME type dummy`, left down.
    pub fn add_dummy_link(&mut self, name: &str) -> Result<(), KernelError> {
        let op = || format!("add dummy {name}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Dummy)]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link add NAME type wireguard`, left down (`EOPNOTSUPP` where the kernel has
    /// no WireGuard).
    pub fn add_wireguard_link(&mut self, name: &str) -> Result<(), KernelError> {
        let op = || format!("add wireguard {name}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(InfoKind::Wireguard)]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link add NAME link #LINK type vlan id ID`, left down.
    pub fn add_vlan_link(&mut self, name: &str, link: u32, id: u16) -> Result<(), KernelError> {
        let op = || format!("add vlan {name} link #{link} id {id}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Link(link));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Vlan),
            LinkInfo::Data(InfoData::Vlan(vec![InfoVlan::Id(id)])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// Whether the kernel has links of `kind` (ipvlan, 802.1Q), asked without making one:
    /// a create request of that kind with no parent link. A kernel without the kind
    /// answers EOPNOTSUPP ("Unknown device type", after trying to load its module); one
    /// with it refuses the request itself (EINVAL: no parent, no VLAN ID).
    pub fn has_link_kind(&mut self, kind: InfoKind) -> Result<bool, KernelError> {
        let op = format!("probe link kind {kind}");
        // A name of its own: an existing link of the name would answer EEXIST first.
        let name = format!("ndkprobe{}", std::process::id() % 1_000_000);
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.clone()));
        m.attributes
            .push(LinkAttribute::LinkInfo(vec![LinkInfo::Kind(kind)]));
        match self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL) {
            Err(Fail {
                errno: Some(Errno::EOPNOTSUPP),
                ..
            }) => Ok(false),
            Err(Fail { errno: Some(_), .. }) => Ok(true),
            Err(f) => Err(f.into_err(op)),
            // Made after all (a kernel taking a parentless link of this kind): not ours to keep.
            Ok(()) => {
                self.delete_link(&name)?;
                Ok(true)
            }
        }
    }
}
