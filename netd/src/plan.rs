//! Plans: the ordered kernel steps one operation needs, each with its undo.
//!
//! Drivers turn model changes into `Step`s; `execute` applies them through a `Kernel` and,
//! when one fails, undoes the ones already applied in reverse order, so a failed
//! operation leaves no half-made link or namespace behind. An "ensure" step
//! (`EnsureBridge`, `EnsureVlanGateway`) may find its object there already (another
//! network's shared VLAN bridge, or reconcile's pass over a healthy one): the kernel
//! says so (`Applied::Found`) and the executor leaves such an object alone on undo, so
//! only what the plan made is unmade. Undo and teardown are best effort and idempotent:
//! "already gone" counts as success.

use std::net::{Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

use crate::kernel::{Kernel, KernelError};
use crate::model::Route;

/// A bridge in the daemon's ("host") namespace, as `ip link add NAME type bridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeSpec {
    pub name: String,
    /// IFLA_IFALIAS, `netd:net=<network>`: marks the link as netd's for reconcile.
    pub alias: String,
    /// 0 keeps the kernel default.
    pub mtu: u32,
    /// Gateway addresses with the subnet's prefix (`172.18.0.1/16`).
    pub addrs: Vec<IpNetwork>,
    /// Enable IPv6 on the bridge (otherwise disable_ipv6=1, so no link-local chatter).
    pub ipv6: bool,
    /// VLAN networks: `vlan_filtering 1 vlan_default_pvid 0` (a new port is in no VLAN
    /// until its own is set).
    #[serde(default)]
    pub vlan_filtering: bool,
    /// Promiscuous mode on (`Network::promisc`); off leaves the flag as it is.
    #[serde(default)]
    pub promisc: bool,
    /// Networks with `vlan_trunk` and no VLAN of their own: `vlan_filtering 1` with the
    /// default VLAN 1, in which the bridge and every port stay untagged; the trunk's
    /// VLANs are each port's (`VethSpec::trunk`).
    #[serde(default)]
    pub trunk: bool,
    /// Service VIPs on the network, as host addresses (`/32`, `/128`) beside the
    /// gateway: a VIP lies in the subnet, so sandboxes treat it as on-link and ask for
    /// its MAC; the host answers and the packet reaches the service dispatch.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub vips: Vec<IpNetwork>,
    /// `nf_call_iptables 1 nf_call_ip6tables 1`: frames bridged between two ports pass
    /// the inet hooks and conntrack, so a backend's reply to a client on the same
    /// bridge is un-DNATed (kube-proxy's br_netfilter). On while the network has a VIP.
    #[serde(default)]
    pub nf_call: bool,
    /// Mixed into the name the bridge's fixed MAC is derived from when it is made
    /// (`kernel::linux::bridge_mac`): an overlay network's bridge has the same name on
    /// every node, but its MAC must differ, since other nodes reach this node's own
    /// address on the network by it (`firewall::OverlaySnat`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mac_seed: String,
}

impl BridgeSpec {
    /// Every global address the bridge holds: gateways, then VIPs.
    pub fn all_addrs(&self) -> Vec<IpNetwork> {
        self.addrs.iter().chain(&self.vips).copied().collect()
    }

    /// What the bridge's MAC is derived from.
    pub fn mac_name(&self) -> String {
        format!("{}{}", self.name, self.mac_seed)
    }
}

/// A veth pair: `host_name` enslaved to `bridge` in the host namespace, the peer created
/// directly inside `netns` as `ifname` with `mac`, `addrs`, and default routes via the
/// gateways given.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VethSpec {
    pub host_name: String,
    pub bridge: String,
    /// IFLA_IFALIAS of the host side, `netd:ep=<sandbox>/<network>`.
    pub alias: String,
    pub mtu: u32,
    pub netns: PathBuf,
    pub ifname: String,
    pub mac: [u8; 6],
    pub addrs: Vec<IpNetwork>,
    pub gw4: Option<Ipv4Addr>,
    pub gw6: Option<Ipv6Addr>,
    /// Routes after the default ones (`Endpoint::routes`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
    /// The host side's VLAN on a VLAN-filtering bridge (PVID, egress untagged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// The host side's hairpin mode (on, unless the bridge is promiscuous).
    #[serde(default = "yes")]
    pub hairpin: bool,
    /// VLANs the host side also carries tagged (`Network::vlan_trunk`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<crate::model::VidRange>,
    /// The sandbox side's ARP retransmit time (`ip ntable change name arp_cache dev
    /// IFNAME retrans MS`), when not the kernel's 1 s: on overlay networks, where the
    /// VXLAN device answers ARP itself (`overlay::ARP_RETRANS_MS`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arp_retrans_ms: Option<u32>,
}

fn yes() -> bool {
    true
}

/// A veth pair whose both ends stay in the host namespace: `host_name` enslaved to
/// `bridge` and up, `peer_name` down and unconfigured. For container engines that move
/// and configure the peer themselves (Docker's libnetwork takes `peer_name` from `Join`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostVethSpec {
    pub host_name: String,
    pub bridge: String,
    /// IFLA_IFALIAS of the host side, `netd:ep=<sandbox>/<network>`.
    pub alias: String,
    pub mtu: u32,
    pub peer_name: String,
    pub peer_mac: [u8; 6],
    /// As `VethSpec::vlan`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vlan: Option<u16>,
    /// As `VethSpec::hairpin`.
    #[serde(default = "yes")]
    pub hairpin: bool,
    /// As `VethSpec::trunk`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub trunk: Vec<crate::model::VidRange>,
}

/// The gateway of a VLAN network (the reference CNI bridge plugin's layout): a veth pair
/// in the host namespace, `name` (`<bridge>.<vlan>`) holding `addrs`, and `peer` a port
/// of `bridge` with `vlan` as PVID and egress untagged. Both ends carry `alias`. An
/// idempotent "ensure", like `EnsureBridge`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanGatewaySpec {
    pub name: String,
    pub peer: String,
    pub bridge: String,
    pub alias: String,
    pub vlan: u16,
    /// 0 keeps the kernel default.
    pub mtu: u32,
    pub addrs: Vec<IpNetwork>,
    pub ipv6: bool,
}

/// `ip link add TMP link PARENT [netns SANDBOX] type macvlan mode MODE` (or `type ipvlan
/// mode MODE FLAG`): with `sandbox`, created there, renamed `ifname`, marked with
/// `alias`, configured and up; without, left down in the host namespace as `tmp_name`
/// (marked) for an engine that moves it itself (Docker).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MacvlanSpec {
    pub tmp_name: String,
    pub parent: String,
    #[serde(default)]
    pub kind: ChildKind,
    /// macvlan: bridge, vepa, private or passthru; ipvlan: l2, l3 or l3s.
    pub mode: String,
    /// ipvlan only: bridge, private or vepa.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub flag: String,
    /// IFLA_IFALIAS, `netd:ep=<sandbox>/<network>`; travels with the link.
    pub alias: String,
    /// 0: the parent's.
    pub mtu: u32,
    /// macvlan only: an ipvlan child has its parent's MAC.
    pub mac: [u8; 6],
    pub sandbox: Option<SandboxSide>,
    /// `parent` is a link of the sandbox's namespace (`Network::parent_in_sandbox`):
    /// the child is made there, next to it.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub parent_in_sandbox: bool,
}

/// The two kinds of child a parent link can have (never both at once: the kernel gives
/// a link one receive handler).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChildKind {
    #[default]
    Macvlan,
    Ipvlan,
}

impl ChildKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChildKind::Macvlan => "macvlan",
            ChildKind::Ipvlan => "ipvlan",
        }
    }
}

/// `ip link add NAME link LINK type vlan id ID`: the 802.1Q parent of a macvlan or ipvlan
/// network (`-o parent=eth0.10`), made when missing and marked with `alias`
/// (`Applied::Made`, undone by deleting it), used as it is when someone else's
/// (`Applied::Found`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VlanParentSpec {
    pub name: String,
    pub link: String,
    pub id: u16,
    pub alias: String,
}

/// An overlay network's VXLAN port: `ip link add NAME mtu MTU type vxlan id VNI local
/// LOCAL dstport PORT nolearning proxy`, enslaved to `bridge` and up. An "ensure" like
/// `EnsureBridge`: one left by an earlier run is kept (`Applied::Found`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VxlanSpec {
    pub name: String,
    pub bridge: String,
    pub vni: u32,
    pub local: Ipv4Addr,
    pub port: u16,
    pub mtu: u32,
}

/// `ip link add NAME type dummy`: the parent of an internal macvlan or ipvlan network
/// (Docker's `dm-<id>`: its children reach each other and nothing else), made when
/// missing and marked with `alias`; undone by deleting it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DummyParentSpec {
    pub name: String,
    pub alias: String,
}

/// Where a link ends up and how it is configured there (a veth peer's or macvlan's).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxSide {
    pub netns: PathBuf,
    pub ifname: String,
    pub addrs: Vec<IpNetwork>,
    pub gw4: Option<Ipv4Addr>,
    pub gw6: Option<Ipv6Addr>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub routes: Vec<Route>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Step {
    /// New network namespace bound at `path`, with `lo` up.
    CreateNetns {
        path: PathBuf,
    },
    /// Bind the daemon's own namespace at `path` (for `--network host` sandboxes).
    BindHostNetns {
        path: PathBuf,
    },
    /// Unmount and remove the namespace file (the namespace dies with its last user).
    DeleteNetns {
        path: PathBuf,
    },
    /// The bridge as `spec` says, made when missing (`Applied::Made`, undone by deleting
    /// it) or brought in line when it exists (`Applied::Found`, never undone).
    EnsureBridge(BridgeSpec),
    CreateVeth(VethSpec),
    CreateHostVeth(HostVethSpec),
    CreateMacvlan(MacvlanSpec),
    /// As `EnsureBridge`, for a VLAN network's gateway pair.
    EnsureVlanGateway(VlanGatewaySpec),
    EnsureVlanParent(VlanParentSpec),
    EnsureVxlan(VxlanSpec),
    EnsureDummyParent(DummyParentSpec),
    /// Delete a link by name, in the host namespace or in `netns`.
    DeleteLink {
        name: String,
        netns: Option<PathBuf>,
    },
    /// Write a sysctl in the host namespace (`net/ipv4/ip_forward`). Not undone.
    Sysctl {
        key: String,
        value: String,
    },
    /// The sandbox side of an endpoint as `SandboxSide` says: up, with its addresses
    /// and routes. Adds only what is missing (`Applied::Made` when it added anything,
    /// `Found` when nothing was): reconcile's repair of a route or address removed
    /// inside a sandbox. Not undone.
    EnsureSandboxLink(SandboxSide),
    /// `<dir>/resolv.conf` with `contents` (`dir` is a sandbox's `/etc/netns/<name>`,
    /// which `ip netns exec` binds over `/etc`), making `dir` when missing.
    WriteResolvConf {
        dir: PathBuf,
        contents: String,
    },
    /// Remove a sandbox's `/etc/netns/<name>` and what it holds.
    DeleteResolvConf {
        dir: PathBuf,
    },
}

/// What applying a step did to its object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applied {
    /// Made it (or, for deletions and sysctls, simply done): undone by `Step::undo`.
    Made,
    /// An ensure step found its object there already and brought it in line; it was
    /// someone else's to make, so it is not undone.
    Found,
}

impl Step {
    /// The step that reverses this one when it made its object (`Applied::Made`), if any.
    pub fn undo(&self) -> Option<Step> {
        match self {
            Step::CreateNetns { path } | Step::BindHostNetns { path } => {
                Some(Step::DeleteNetns { path: path.clone() })
            }
            Step::EnsureBridge(b) => Some(Step::DeleteLink {
                name: b.name.clone(),
                netns: None,
            }),
            Step::CreateVeth(v) => Some(Step::DeleteLink {
                name: v.host_name.clone(),
                netns: None,
            }),
            Step::CreateHostVeth(v) => Some(Step::DeleteLink {
                name: v.host_name.clone(),
                netns: None,
            }),
            Step::EnsureVlanGateway(g) => Some(Step::DeleteLink {
                name: g.name.clone(),
                netns: None,
            }),
            Step::EnsureVlanParent(v) => Some(Step::DeleteLink {
                name: v.name.clone(),
                netns: None,
            }),
            Step::EnsureVxlan(v) => Some(Step::DeleteLink {
                name: v.name.clone(),
                netns: None,
            }),
            Step::EnsureDummyParent(d) => Some(Step::DeleteLink {
                name: d.name.clone(),
                netns: None,
            }),
            Step::CreateMacvlan(m) => Some(match &m.sandbox {
                Some(sb) => Step::DeleteLink {
                    name: sb.ifname.clone(),
                    netns: Some(sb.netns.clone()),
                },
                None => Step::DeleteLink {
                    name: m.tmp_name.clone(),
                    netns: None,
                },
            }),
            Step::WriteResolvConf { dir, .. } => Some(Step::DeleteResolvConf { dir: dir.clone() }),
            Step::DeleteNetns { .. }
            | Step::EnsureSandboxLink(_)
            | Step::DeleteLink { .. }
            | Step::Sysctl { .. }
            | Step::DeleteResolvConf { .. } => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{step} failed: {source}")]
pub struct PlanError {
    pub step: String,
    #[source]
    pub source: KernelError,
}

/// Applies `steps` in order. On failure, undoes the ones that made their object, in
/// reverse, and returns the first error. Undo failures are logged, not returned: the
/// original error is what the caller must see.
pub fn execute(kernel: &dyn Kernel, steps: &[Step]) -> Result<(), PlanError> {
    execute_reporting(kernel, steps).map(drop)
}

/// `execute`, answering what each step did (in order), so reconcile can tell a repair
/// (`Made`) from an object that was fine (`Found`).
pub fn execute_reporting(kernel: &dyn Kernel, steps: &[Step]) -> Result<Vec<Applied>, PlanError> {
    let mut done: Vec<Applied> = Vec::with_capacity(steps.len());
    for step in steps {
        match kernel.apply(step) {
            Ok(a) => done.push(a),
            Err(source) => {
                for (s, _) in steps
                    .iter()
                    .zip(&done)
                    .rev()
                    .filter(|(_, a)| **a == Applied::Made)
                {
                    if let Some(u) = s.undo() {
                        if let Err(e) = kernel.apply(&u) {
                            tracing::warn!(step = %describe(&u), error = %e, "undo failed");
                        }
                    }
                }
                return Err(PlanError {
                    step: describe(step),
                    source,
                });
            }
        }
    }
    Ok(done)
}

/// Applies teardown steps, continuing past failures; returns the failures.
pub fn teardown(kernel: &dyn Kernel, steps: &[Step]) -> Vec<PlanError> {
    steps
        .iter()
        .filter_map(|s| {
            kernel.apply(s).err().map(|source| PlanError {
                step: describe(s),
                source,
            })
        })
        .collect()
}

/// One line an operator recognises, in `ip` terms.
pub fn describe(step: &Step) -> String {
    match step {
        Step::CreateNetns { path } => format!("create netns {}", path.display()),
        Step::BindHostNetns { path } => format!("bind host netns at {}", path.display()),
        Step::DeleteNetns { path } => format!("delete netns {}", path.display()),
        Step::EnsureBridge(b) => format!("ensure bridge {}", b.name),
        Step::EnsureVxlan(v) => format!(
            "ensure vxlan {} id {} local {} dstport {} (master {})",
            v.name, v.vni, v.local, v.port, v.bridge
        ),
        Step::CreateVeth(v) => format!(
            "create veth {} (master {}) <-> {}:{}",
            v.host_name,
            v.bridge,
            v.netns.display(),
            v.ifname
        ),
        Step::CreateHostVeth(v) => format!(
            "create veth {} (master {}) <-> {} (left for the engine)",
            v.host_name, v.bridge, v.peer_name
        ),
        Step::CreateMacvlan(m) => {
            let flag = if m.flag.is_empty() {
                String::new()
            } else {
                format!(" {}", m.flag)
            };
            let what = format!(
                "create {} {} (link {}{} mode {}{flag})",
                m.kind.as_str(),
                m.tmp_name,
                m.parent,
                if m.parent_in_sandbox {
                    " in the sandbox"
                } else {
                    ""
                },
                m.mode
            );
            match &m.sandbox {
                Some(sb) => format!("{what} -> {}:{}", sb.netns.display(), sb.ifname),
                None => format!("{what} (left for the engine)"),
            }
        }
        Step::EnsureVlanParent(v) => format!("ensure vlan {} (link {} id {})", v.name, v.link, v.id),
        Step::EnsureDummyParent(d) => format!("ensure dummy {}", d.name),
        Step::EnsureVlanGateway(g) => format!(
            "ensure veth {} <-> {} (master {} vlan {} pvid untagged)",
            g.name, g.peer, g.bridge, g.vlan
        ),
        Step::DeleteLink { name, netns: None } => format!("delete link {name}"),
        Step::DeleteLink { name, netns: Some(p) } => format!("delete link {name} in {}", p.display()),
        Step::Sysctl { key, value } => format!("sysctl {key}={value}"),
        Step::EnsureSandboxLink(sb) => format!(
            "ensure addresses and routes of {} in {}",
            sb.ifname,
            sb.netns.display()
        ),
        Step::WriteResolvConf { dir, .. } => format!("write {}/resolv.conf", dir.display()),
        Step::DeleteResolvConf { dir } => format!("delete {}", dir.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::fake::FakeKernel;

    #[test]
    fn failure_undoes_applied_steps_in_reverse() {
        let k = FakeKernel::default();
        let ns = PathBuf::from("/run/netns/a");
        let steps = vec![
            Step::CreateNetns { path: ns.clone() },
            Step::EnsureBridge(bridge("netd-x")),
            Step::EnsureBridge(bridge("FAIL")),
        ];
        k.fail_on("ensure bridge FAIL");
        let err = execute(&k, &steps).unwrap_err();
        assert!(err.to_string().contains("ensure bridge FAIL"));
        assert_eq!(
            k.log(),
            vec![
                "create netns /run/netns/a",
                "ensure bridge netd-x",
                "delete link netd-x",
                "delete netns /run/netns/a"
            ]
        );
        assert!(k.links().is_empty() && k.netns().is_empty());
    }

    fn bridge(name: &str) -> BridgeSpec {
        BridgeSpec {
            name: name.into(),
            alias: format!("netd:net={name}"),
            mtu: 0,
            addrs: vec![],
            ipv6: false,
            vlan_filtering: false,
            promisc: false,
            trunk: false,
            vips: vec![],
            nf_call: false,
            mac_seed: String::new(),
        }
    }

    /// A bridge that was there before the plan (a VLAN bridge another network shares)
    /// stays when a later step fails; one the plan made goes.
    #[test]
    fn an_ensured_bridge_that_existed_is_not_undone() {
        let k = FakeKernel::default();
        k.apply(&Step::EnsureBridge(bridge("shared"))).expect("first");
        let steps = vec![
            Step::EnsureBridge(bridge("shared")),
            Step::EnsureBridge(bridge("new")),
            Step::CreateNetns {
                path: "/run/netns/b".into(),
            },
        ];
        k.fail_on("create netns /run/netns/b");
        let done = execute_reporting(&k, &steps[..2]).expect("ensure both");
        assert_eq!(done, vec![Applied::Found, Applied::Made]);
        k.apply(&Step::DeleteLink {
            name: "new".into(),
            netns: None,
        })
        .expect("reset");
        let log = k.log().len();
        execute(&k, &steps).unwrap_err();
        assert_eq!(
            k.log()[log..],
            ["ensure bridge shared", "ensure bridge new", "delete link new"]
        );
        assert_eq!(k.links().into_iter().collect::<Vec<_>>(), ["shared"]);
    }

    /// resolv.conf is written by a step, removed by its undo and by `DeleteResolvConf`.
    #[test]
    fn resolv_conf_steps_are_applied_and_undone() {
        let k = FakeKernel::default();
        let dir = PathBuf::from("/etc/netns/web");
        let steps = vec![
            Step::CreateNetns {
                path: "/run/netns/web".into(),
            },
            Step::WriteResolvConf {
                dir: dir.clone(),
                contents: "nameserver 127.0.0.11\n".into(),
            },
            Step::EnsureBridge(bridge("FAIL")),
        ];
        execute(&k, &steps[..2]).expect("write");
        assert_eq!(
            k.files().get(&dir.join("resolv.conf")).map(String::as_str),
            Some("nameserver 127.0.0.11\n")
        );
        teardown(&k, &[Step::DeleteResolvConf { dir: dir.clone() }]);
        assert!(k.files().is_empty());
        // Already gone is success.
        assert!(teardown(&k, &[Step::DeleteResolvConf { dir: dir.clone() }]).is_empty());
        k.apply(&Step::DeleteNetns {
            path: "/run/netns/web".into(),
        })
        .expect("reset");
        k.fail_on("ensure bridge FAIL");
        let log = k.log().len();
        execute(&k, &steps).unwrap_err();
        assert_eq!(
            k.log()[log..],
            [
                "create netns /run/netns/web",
                "write /etc/netns/web/resolv.conf",
                "delete /etc/netns/web",
                "delete netns /run/netns/web"
            ]
        );
        assert!(k.files().is_empty() && k.netns().is_empty());
    }
}
