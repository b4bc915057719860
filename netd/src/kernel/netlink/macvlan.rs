//! macvlan requests: `ip link add NAME link PARENT [netns NS] type macvlan mode MODE`,
//! and the rename that finishes it, `ip link set NAME name IFNAME alias ALIAS`.

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
    /// `ip link add NAME link #PARENT [netns NS] [mtu M] [address MAC] type macvlan mode
    /// MODE`, left down. The parent is looked up in this socket's namespace; with `netns`
    /// the child is created directly in NS. That is not the same as creating it here and
    /// moving it: a move waits for an RCU grace period (`synchronize_net` in
    /// `dev_change_net_namespace`, 10-40 ms here), a create into NS does not.
    pub fn add_macvlan(
        &mut self,
        name: &str,
        parent: u32,
        mode: MacVlanMode,
        mtu: u32,
        mac: Option<[u8; 6]>,
        netns: Option<BorrowedFd<'_>>,
    ) -> Result<(), KernelError> {
        let op = || format!("add macvlan {name} link #{parent}");
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

    /// `ip link set #INDEX name NEW_NAME alias ALIAS`, one request (the link must be
    /// down to be renamed). The kernel renames first: if NEW_NAME is taken the request
    /// fails before the alias is set.
    pub fn rename_and_mark(&mut self, index: u32, new_name: &str, alias: &str) -> Result<(), KernelError> {
        let op = || format!("set link #{index} name {new_name} alias {alias}");
        check_ifname(&op(), new_name)?;
        let mut m = LinkMessage::default();
        m.header.index = index;
        m.attributes.push(LinkAttribute::IfName(new_name.to_string()));
        m.attributes.push(LinkAttribute::IfAlias(alias.to_string()));
        self.change(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|f| f.into_err(op()))
    }
}
