//! Bridge VLAN requests: a VLAN-filtering bridge (`ip link add NAME type bridge
//! vlan_filtering 1 vlan_default_pvid 0`) and a port's VLAN (`bridge vlan add dev PORT vid
//! N pvid untagged`, RTM_SETLINK of family AF_BRIDGE with IFLA_AF_SPEC /
//! IFLA_BRIDGE_VLAN_INFO).

use netlink_packet_core::{NLM_F_CREATE, NLM_F_EXCL};
use netlink_packet_route::link::{
    AfSpecBridge, BridgeVlanInfo, BridgeVlanInfoFlags, InfoBridge, InfoData, InfoKind, LinkAttribute,
    LinkInfo, LinkMessage,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use nix::errno::Errno;

use super::{check_ifname, Fail, Netlink};
use crate::kernel::KernelError;

/// What creating a VLAN-filtering bridge said.
pub enum VlanBridge {
    Created,
    /// EOPNOTSUPP: a kernel built without CONFIG_BRIDGE_VLAN_FILTERING.
    Unsupported,
}

/// Which VLAN a VLAN-filtering bridge puts new ports (and itself) in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DefaultVlan {
    /// `vlan_default_pvid 0`, the bridge of VLAN networks: a new port is in no VLAN
    /// until its own is set, so it never talks on VLAN 1 in between (nor with anything
    /// else on it afterwards).
    None,
    /// The kernel's default, VLAN 1 untagged: a trunk network's own bridge, which holds
    /// the gateway address and whose ports are in VLAN 1 as on a bridge that does not
    /// filter, plus their trunk VLANs.
    One,
}

fn vlan_bridge_msg(name: &str, default: DefaultVlan) -> LinkMessage {
    let mut m = LinkMessage::default();
    m.attributes.push(LinkAttribute::IfName(name.to_string()));
    m.attributes.push(LinkAttribute::LinkInfo(vec![
        LinkInfo::Kind(InfoKind::Bridge),
        LinkInfo::Data(InfoData::Bridge(vec![
            InfoBridge::VlanFiltering(true),
            InfoBridge::VlanDefaultPvid(match default {
                DefaultVlan::None => 0,
                DefaultVlan::One => 1,
            }),
        ])),
    ]));
    m
}

impl Netlink {
    /// `ip link add NAME [mtu M] [address MAC] type bridge vlan_filtering 1
    /// vlan_default_pvid 0` (left down).
    pub fn add_vlan_bridge(
        &mut self,
        name: &str,
        mtu: u32,
        mac: Option<[u8; 6]>,
        default: DefaultVlan,
    ) -> Result<VlanBridge, KernelError> {
        let op = || format!("add bridge {name} vlan_filtering 1");
        check_ifname(&op(), name)?;
        let mut m = vlan_bridge_msg(name, default);
        if mtu != 0 {
            m.attributes.push(LinkAttribute::Mtu(mtu));
        }
        if let Some(mac) = mac {
            m.attributes.push(LinkAttribute::Address(mac.to_vec()));
        }
        match self.change(RouteNetlinkMessage::NewLink(m), NLM_F_CREATE | NLM_F_EXCL) {
            Ok(()) => Ok(VlanBridge::Created),
            Err(Fail {
                errno: Some(Errno::EOPNOTSUPP),
                ..
            }) => Ok(VlanBridge::Unsupported),
            Err(f) => Err(f.into_err(op())),
        }
    }

    /// `ip link set NAME type bridge vlan_filtering 1 vlan_default_pvid 0|1` on an
    /// existing bridge (no-ops when already so).
    pub fn set_vlan_filtering(&mut self, name: &str, default: DefaultVlan) -> Result<(), KernelError> {
        self.change(RouteNetlinkMessage::NewLink(vlan_bridge_msg(name, default)), 0)
            .map_err(|f| f.into_err(format!("set bridge {name} vlan_filtering 1")))
    }

    /// `ip link set NAME type bridge nf_call_iptables X nf_call_ip6tables X`.
    pub fn set_bridge_nf_call(&mut self, name: &str, on: bool) -> Result<(), KernelError> {
        let mut m = LinkMessage::default();
        m.attributes.push(LinkAttribute::IfName(name.to_string()));
        m.attributes.push(LinkAttribute::LinkInfo(vec![
            LinkInfo::Kind(InfoKind::Bridge),
            LinkInfo::Data(InfoData::Bridge(vec![
                InfoBridge::NfCallIpTables(on),
                InfoBridge::NfCallIp6Tables(on),
            ])),
        ]));
        self.change(RouteNetlinkMessage::NewLink(m), 0)
            .map_err(|f| f.into_err(format!("set bridge {name} nf_call_iptables {}", u8::from(on))))
    }

    /// `bridge vlan add dev #PORT vid A[-B]` for each range, in one request: frames of
    /// those VLANs pass the port tagged, both ways.
    pub fn add_port_trunk(&mut self, port: u32, trunk: &[(u16, u16)]) -> Result<(), KernelError> {
        if trunk.is_empty() {
            return Ok(());
        }
        let mut infos = Vec::new();
        for &(a, b) in trunk {
            if a == b {
                infos.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::empty(),
                    vid: a,
                }));
            } else {
                infos.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeBegin,
                    vid: a,
                }));
                infos.push(AfSpecBridge::VlanInfo(BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::RangeEnd,
                    vid: b,
                }));
            }
        }
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.header.index = port;
        m.attributes.push(LinkAttribute::AfSpecBridge(infos));
        self.change(RouteNetlinkMessage::SetLink(m), 0).map_err(|f| {
            f.into_err(format!(
                "bridge vlan add dev #{port} vid {}",
                crate::model::format_vid_ranges(trunk)
            ))
        })
    }

    /// `bridge vlan add dev #PORT vid VID pvid untagged`: untagged frames from the port
    /// go to VLAN `vid`, frames of `vid` leave it untagged.
    pub fn set_port_vlan(&mut self, port: u32, vid: u16) -> Result<(), KernelError> {
        let mut m = LinkMessage::default();
        m.header.interface_family = AddressFamily::Bridge;
        m.header.index = port;
        m.attributes
            .push(LinkAttribute::AfSpecBridge(vec![AfSpecBridge::VlanInfo(
                BridgeVlanInfo {
                    flags: BridgeVlanInfoFlags::Pvid | BridgeVlanInfoFlags::Untagged,
                    vid,
                },
            )]));
        self.change(RouteNetlinkMessage::SetLink(m), 0)
            .map_err(|f| f.into_err(format!("bridge vlan add dev #{port} vid {vid} pvid untagged")))
    }
}
