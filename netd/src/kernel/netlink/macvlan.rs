//! macvlan requests: `ip link add NAME link PARENT type macvlan mode MODE` and the move
//! into a sandbox, `ip link set NAME netns NS name IFNAME`.

use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoMacVlan, LinkAttribute, LinkInfo, LinkMessage, MacVlanMode,
};
use netlink_packet_route::RouteNetlinkMessage;

use super::{check_ifname, Netlink};
use crate::kernel::KernelError;

/// Docker's mode names (`passthru`, not the kernel's `passthrough`).
pub fn mode_from_name(mode: &str) -> Option<MacVlanMode> {
    Some(match mode {
        "bridge" => MacVlanMode::Bridge,
        "vepa" => MacVlanMode::Vepa,
        "private" => MacVlanMode::Private,
        "passthru" => MacVlanMode::Passthrough,
        _ => return None,
    })
}

impl Netlink {
    /// `ip link add NAME link #PARENT [mtu M] [address MAC] type macvlan mode MODE`,
    /// left down.
    pub fn add_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        mtu: u32,
        mac: Option<[u8; 6]>,
    ) -> Result<(), KernelError> {
        let op = || format!("add macvlan {name} link #{parent}");
        check_ifname(&op(), name)?;
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::Link(parent));
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::MacVlan),
            LinkInfo::Data(InfoData::MacVlan(vec![InfoMacVlan::Mode(mode)])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL)
            .map_err(|f| f.into_err(op()))
    }

    /// `ip link set #INDEX netns NS name NEW_NAME`, one request. The kernel moves the
    /// link first and renames it after, so when NEW_NAME is taken in NS the request
    /// fails with the link already there under its old name (the caller cleans up).
    pub fn move_link(&mut self, index: u32, ns: BorrowedFd<'_>, new_name: &str) -> Result<(), KernelError> {
        let op = || format!("set link #{index} netns (sandbox) name {new_name}");
        check_ifname(&op(), new_name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(new_name.to_string()));
        m.attributes.push(LinkAttribute::NetNsFd(ns.as_raw_fd()));
        self.change(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|f| f.into_err(op()))
    }
}
