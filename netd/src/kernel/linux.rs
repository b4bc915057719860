//! `LinuxKernel`: the real `Kernel`, applying plan steps with rtnetlink, namespace
//! mounts, sysctls and nftables.
//!
//! One instance acts on one "host" namespace: the daemon's own (`current`) or any
//! namespace bound at a path (`for_netns`), which is how tests run several daemons in one
//! process. Host-side work goes through one long-lived route socket opened in that
//! namespace (behind a `Mutex`: the engine applies steps one at a time anyway) and one
//! `NsThread` in it for sysctls; sandbox-side work opens a socket inside the sandbox
//! namespace for the duration of one step. The hot path (`CreateVeth`) does no dumps: a
//! handful of requests on two sockets and one sysctl write.

use std::net::IpAddr;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use ipnetwork::IpNetwork;
use netlink_packet_route::route::RouteType;

use super::netlink::{Link, LinkChange, Netlink, VethReq};
use super::netns::{self, NsThread};
use super::nft::Nft;
use super::{sysctl, Kernel, KernelError, OwnedLink};
use crate::plan::{Applied, BridgeSpec, HostVethSpec, Step, VethSpec};

/// Alias prefix that marks a link as netd's.
const OWNED_PREFIX: &str = "netd:";

pub struct LinuxKernel {
    /// `None`: the namespace of the thread that called `current()`.
    host_path: Option<PathBuf>,
    /// Worker inside the host namespace (sysctls, binding the host namespace).
    host: NsThread,
    /// Route socket opened inside the host namespace.
    nl: Mutex<Netlink>,
    /// nftables context for the host namespace, made on first use.
    nft: Mutex<Option<Nft>>,
    /// Host links are deleted by a detached process (`with_detached_deletes`).
    detached_deletes: bool,
    /// The nfnetlink socket of element batches and table lookups, kept open
    /// (`nft_elements::Conn`).
    nfnl: Mutex<Option<super::nft_elements::Conn>>,
    /// The IPVS generic netlink socket, opened in the host namespace on first use.
    ipvs: Mutex<Option<super::ipvs::Ipvs>>,
}

impl std::fmt::Debug for LinuxKernel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinuxKernel")
            .field("host", &self.host.netns())
            .finish()
    }
}

impl Drop for LinuxKernel {
    fn drop(&mut self) {
        // A short-lived process's socket that deleted elements: its close would wait for
        // the kernel's frees (`detach`). (In DEL the link deletion took it over already.)
        let conn = self.nfnl.get_mut().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(c) = conn.filter(|c| c.deleted && self.detached_deletes) {
            super::detach::hold_until_closed(vec![c.into_fd()]);
        }
    }
}

impl LinuxKernel {
    /// A kernel whose host is the calling thread's namespace (the daemon's normal mode).
    pub fn current() -> Result<Self, KernelError> {
        Ok(LinuxKernel {
            host_path: None,
            host: NsThread::spawn(None)?,
            nl: Mutex::new(Netlink::open()?),
            nft: Mutex::new(None),
            detached_deletes: false,
            nfnl: Mutex::new(None),
            ipvs: Mutex::new(None),
        })
    }

    /// A kernel whose host is the namespace bound at `path`.
    pub fn for_netns(path: impl AsRef<Path>) -> Result<Self, KernelError> {
        let path = path.as_ref();
        Ok(LinuxKernel {
            host_path: Some(path.to_path_buf()),
            host: NsThread::spawn(Some(path))?,
            nl: Mutex::new(Netlink::open_in(path)?),
            nft: Mutex::new(None),
            detached_deletes: false,
            nfnl: Mutex::new(None),
            ipvs: Mutex::new(None),
        })
    }

    /// For a process that exits after one operation: deleting a host link returns once
    /// the link is gone from the namespace, and the kernel's cleanup after it (RCU
    /// barrier, 12–20 ms for a veth) runs in a detached process instead of holding up
    /// the exit (`Netlink::delete_link_detached`); so does the close of the nfnetlink
    /// socket when it deleted set elements (see `detach`).
    pub fn with_detached_deletes(mut self) -> Self {
        self.detached_deletes = true;
        self
    }

    /// The host namespace's path, `None` for `current()`.
    pub fn host_netns(&self) -> Option<&Path> {
        self.host_path.as_deref()
    }

    /// The host route socket. A panic while holding it cannot leave the socket in a
    /// bad state (replies are matched by sequence number), so poisoning is ignored.
    pub(super) fn nl(&self) -> MutexGuard<'_, Netlink> {
        self.nl.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The worker in the host namespace (sysctls).
    pub(super) fn host_thread(&self) -> &NsThread {
        &self.host
    }

    fn with_nft<T>(&self, f: impl FnOnce(&Nft) -> Result<T, KernelError>) -> Result<T, KernelError> {
        let mut g = self.nft.lock().unwrap_or_else(|e| e.into_inner());
        if g.is_none() {
            *g = Some(Nft::new_in(self.host_path.as_deref())?);
        }
        match g.as_ref() {
            Some(nft) => f(nft),
            None => Err(KernelError::Nft("nftables context missing".into())),
        }
    }

    // ---- bridge ------------------------------------------------------------------

    /// `ip link add NAME type bridge` as an idempotent "ensure": an existing bridge
    /// with our alias is brought in line with `b` (`Applied::Found`); anything else by
    /// that name is refused.
    fn ensure_bridge(&self, b: &BridgeSpec) -> Result<Applied, KernelError> {
        let mut nl = self.nl();
        let existing = nl.link(&b.name)?;
        let created = match &existing {
            Some(l) => {
                if l.kind.as_deref() != Some("bridge") || l.alias.as_deref() != Some(b.alias.as_str()) {
                    return Err(KernelError::NotNetds {
                        name: b.name.clone(),
                        pick: "name",
                    });
                }
                false
            }
            None => {
                // A fixed MAC: a bridge without one takes the lowest MAC of its ports,
                // so the gateway's MAC would change as sandboxes come and go, leaving
                // stale neighbour entries in every other sandbox.
                if let Some(default) = super::vlan::default_vlan(b) {
                    super::vlan::add_vlan_bridge(
                        &mut nl,
                        &b.name,
                        b.mtu,
                        bridge_mac(&b.mac_name()),
                        default,
                    )?;
                } else {
                    nl.add_bridge(&b.name, b.mtu, Some(bridge_mac(&b.mac_name())))?;
                }
                true
            }
        };
        let res = self.configure_bridge(&mut nl, b, existing.as_ref());
        if res.is_err() && created {
            // The failing step is not undone by the plan executor; do not leave a
            // half-configured bridge that a retry would then accept as ours.
            if let Err(e) = nl.delete_link(&b.name) {
                tracing::warn!(bridge = %b.name, error = %e, "cleanup of failed bridge failed");
            }
        }
        res.map(|_| if created { Applied::Made } else { Applied::Found })
    }

    fn configure_bridge(
        &self,
        nl: &mut Netlink,
        b: &BridgeSpec,
        existing: Option<&Link>,
    ) -> Result<(), KernelError> {
        let mut ch = LinkChange::default();
        if existing.is_none() {
            ch.alias = Some(&b.alias);
        }
        if b.mtu != 0 && existing.is_some_and(|l| l.mtu != b.mtu) {
            // Setting it explicitly also stops the bridge from following its ports' MTU.
            ch.mtu = Some(b.mtu);
        }
        // Every time: the flag the kernel reports is also on while a packet socket
        // (tcpdump) holds the link promiscuous, and setting netd's own is idempotent.
        if b.promisc {
            ch.promisc = Some(true);
        }
        if ch.alias.is_some() || ch.mtu.is_some() || ch.promisc.is_some() {
            nl.set_link(&b.name, &ch)?;
        }
        if let Some(default) = super::vlan::default_vlan(b).filter(|_| existing.is_some()) {
            nl.set_vlan_filtering(&b.name, default)?;
        }

        // Sysctls before the link goes up, so an IPv4-only bridge never gets a
        // link-local address nor sends router solicitations.
        let conf6 = |k: &str| format!("net/ipv6/conf/{}/{k}", b.name);
        let v = |on: bool| if on { "1" } else { "0" }.to_string();
        let mut items = vec![
            // Optional: when IPv6 is disabled at boot the key is absent, which is fine
            // for a bridge that wants it off.
            (conf6("disable_ipv6"), v(!b.ipv6), !b.ipv6),
            // Published ports are DNATed to sandboxes; for that to work from the host
            // on 127.0.0.1 the kernel must route loopback-sourced packets out the bridge.
            (format!("net/ipv4/conf/{}/route_localnet", b.name), v(true), false),
            (String::from("net/ipv4/ip_forward"), v(true), false),
        ];
        if b.ipv6 {
            // A forwarding host ignores RAs anyway; say so explicitly on the bridge.
            items.push((conf6("accept_ra"), v(false), false));
            // Note: all/forwarding=1 turns every interface into a router, so an uplink
            // configured by SLAAC needs accept_ra=2 to keep its default route.
            items.push(("net/ipv6/conf/all/forwarding".into(), v(true), false));
        }
        sysctl::write_all_in(&self.host, &items)?;

        let index = match existing {
            Some(l) => l.index,
            None => nl.link_index(&b.name)?.ok_or_else(|| KernelError::Vanished {
                what: format!("bridge {}", b.name),
                when: "while configuring it",
            })?,
        };
        // Make the bridge's global addresses exactly `b.addrs` (link-local ones stay).
        let have: Vec<IpNetwork> = if existing.is_some() {
            nl.addresses()?
                .into_iter()
                .filter(|a| a.index == index && a.scope == 0)
                .map(|a| a.net)
                .collect()
        } else {
            Vec::new()
        };
        let want = b.all_addrs();
        for stale in have.iter().filter(|n| !want.contains(n)) {
            nl.del_address(index, *stale)?;
        }
        for w in want.iter().filter(|n| !have.contains(n)) {
            nl.add_address(index, *w)?;
        }
        // Set on an existing bridge every time (idempotent, one message): the kernel's
        // link dump here does not say it, and the last VIP leaving turns it off again.
        if b.nf_call || existing.is_some() {
            nl.set_bridge_nf_call(&b.name, b.nf_call)?;
        }
        if !existing.is_some_and(|l| l.up) {
            nl.set_up(&b.name)?;
        }
        Ok(())
    }

    // ---- veth --------------------------------------------------------------------

    /// A veth pair between the bridge and a sandbox; on any failure the host side is
    /// deleted again (which also removes the peer), so no half-made pair is left.
    ///
    /// Most of the time is the kernel registering two devices (~0.5 ms). In the daemon,
    /// entering the sandbox namespace for a socket (a thread spawn) runs in parallel
    /// with it; a short-lived process enters on its one thread, before
    /// (`netns::allow_entering_in_place`).
    fn create_veth(&self, v: &VethSpec) -> Result<(), KernelError> {
        // Opened before anything is created: a missing namespace fails cleanly.
        let ns = netns::open(&v.netns)?;
        std::thread::scope(|s| {
            let sandbox = netns::spawn_in(s, &v.netns, &ns, Netlink::open);
            let mut nl = self.nl();
            let master = bridge_index(&mut nl, &v.bridge, &v.host_name)?;
            nl.add_veth(&VethReq {
                name: &v.host_name,
                mtu: v.mtu,
                master: Some(master),
                // The host side comes up last (`host_port_up`), after addrgenmode none.
                up: false,
                peer_name: &v.ifname,
                peer_netns: Some(ns.as_fd()),
                peer_mac: Some(v.mac),
            })?;
            // The kernel ignores IFLA_IFALIAS (and IFLA_AF_SPEC) in a create request, so
            // mark the link as netd's right away: a crash from here on leaves a link
            // reconcile recognises (and removes, with its peer in the sandbox) instead of
            // an anonymous one. `host_port_up`, the last step, gives it its final alias.
            let res = host_port_created(&mut nl, &v.host_name, &v.alias)
                .and_then(|_| super::vlan::port_vlan(&mut nl, &v.host_name, v.vlan, &v.trunk))
                .and_then(|_| self.finish_veth(&mut nl, v, || netns::join_scoped(&v.netns, sandbox)?));
            undo_on_error(&mut nl, &v.host_name, res)
        })
    }

    fn finish_veth(
        &self,
        nl: &mut Netlink,
        v: &VethSpec,
        sandbox: impl FnOnce() -> Result<Netlink, KernelError>,
    ) -> Result<(), KernelError> {
        // The peer already has its name, MAC and MTU from the create request; the rest
        // needs the socket opened inside the sandbox namespace.
        let mut sb = sandbox()?;
        let index = sb.index_rcu(&v.ifname)?.ok_or_else(|| KernelError::Netlink {
            op: format!("configure {} in {}", v.ifname, v.netns.display()),
            errno: Some(nix::errno::Errno::ENODEV),
            msg: "peer not found after creation".into(),
        })?;
        sb.configure_sandbox_link(index, &v.ifname, &v.addrs, v.gw4, v.gw6, &v.routes)?;
        if let Some(ms) = v.arp_retrans_ms {
            sb.set_arp_retrans(index, &v.ifname, ms)?;
        }
        host_port_up(nl, &v.host_name, &v.alias, v.hairpin)
    }

    /// A veth pair with both ends in the host namespace; the engine (Docker) moves and
    /// configures the peer. The host side is finished like `create_veth`'s; on failure the
    /// pair is deleted again.
    fn create_host_veth(&self, v: &HostVethSpec) -> Result<(), KernelError> {
        let mut nl = self.nl();
        let master = bridge_index(&mut nl, &v.bridge, &v.host_name)?;
        nl.add_veth(&VethReq {
            name: &v.host_name,
            mtu: v.mtu,
            master: Some(master),
            up: false,
            peer_name: &v.peer_name,
            peer_netns: None,
            peer_mac: Some(v.peer_mac),
        })?;
        let res = (|| {
            host_port_created(&mut nl, &v.host_name, &v.alias)?;
            super::vlan::port_vlan(&mut nl, &v.host_name, v.vlan, &v.trunk)?;
            host_port_up(&mut nl, &v.host_name, &v.alias, v.hairpin)
        })();
        undo_on_error(&mut nl, &v.host_name, res)
    }

    fn delete_link(&self, name: &str, ns: Option<&Path>) -> Result<(), KernelError> {
        match ns {
            None if self.detached_deletes => {
                let sender = match &self.host_path {
                    None => Netlink::open()?,
                    Some(p) => Netlink::open_in(p)?,
                };
                // The deleting process also takes over the nfnetlink socket, whose close
                // may wait for the kernel too (`detach`).
                let mut nfnl = self.nfnl.lock().unwrap_or_else(|e| e.into_inner());
                let fds: Vec<_> = nfnl.iter().map(|c| c.raw_fd()).collect();
                let res = sender.delete_link_detached(name, &mut self.nl(), &fds);
                if res.is_ok() {
                    nfnl.take();
                }
                res.map(drop)
            }
            None => self.nl().delete_link(name).map(drop),
            // A link inside a namespace that is gone went with it.
            Some(p) if !netns::is_alive(p) => Ok(()),
            Some(p) => Netlink::open_in(p)?.delete_link(name).map(drop),
        }
    }

    /// Runs `f` on the kept nfnetlink socket (opened in the host namespace on first use).
    fn with_nfnl<T>(
        &self,
        f: impl FnOnce(&mut super::nft_elements::Conn) -> Result<T, super::nft_elements::Error>,
    ) -> Result<T, super::nft_elements::Error> {
        let mut g = self.nfnl.lock().unwrap_or_else(|e| e.into_inner());
        let conn = match g.take() {
            Some(c) => c,
            None => match &self.host_path {
                None => super::nft_elements::Conn::open()?,
                Some(_) => self.host.run(super::nft_elements::Conn::open)??,
            },
        };
        let conn = g.insert(conn);
        let res = f(conn);
        if matches!(&res, Err(super::nft_elements::Error::Kernel(e)) if e.spoils_nfnl_socket()) {
            *g = None;
        }
        res
    }

    /// Runs `f` on the kept IPVS socket (opened by the host worker, so in the host
    /// namespace whichever thread asks). A failed call leaves the socket usable: replies
    /// are matched by sequence number.
    fn with_ipvs<T>(
        &self,
        f: impl FnOnce(&mut super::ipvs::Ipvs) -> Result<T, KernelError>,
    ) -> Result<T, KernelError> {
        let mut g = self.ipvs.lock().unwrap_or_else(|e| e.into_inner());
        let c = match g.take() {
            Some(c) => c,
            None => self.host.run(super::ipvs::Ipvs::open)??,
        };
        f(g.insert(c))
    }

    fn bind_host_netns(&self, path: &Path) -> Result<(), KernelError> {
        let p = path.to_path_buf();
        self.host.run(move || netns::bind_current(&p))?
    }
}

/// The index of the bridge a new veth `host_name` is to join; a missing bridge is an error.
/// Looked up under RCU (`Netlink::index_rcu`): a route-socket lookup would wait for RTNL
/// behind any link deletion under way.
fn bridge_index(nl: &mut Netlink, bridge: &str, host_name: &str) -> Result<u32, KernelError> {
    nl.index_rcu(bridge)?.ok_or_else(|| KernelError::Netlink {
        op: format!("add veth {host_name}"),
        errno: Some(nix::errno::Errno::ENODEV),
        msg: format!("bridge {bridge} does not exist"),
    })
}

/// The last step for the host side of a veth (both kinds): hairpin on (unless the
/// bridge is promiscuous, `VethSpec::hairpin`), marked as netd's, up. With
/// br_netfilter, a sandbox reaching its own published port through a host address is
/// DNATed and bridged straight back out of the port it came in on; the bridge only does
/// that in hairpin mode (Docker sets it when its userland proxy is off).
fn host_port_up(nl: &mut Netlink, name: &str, alias: &str, hairpin: bool) -> Result<(), KernelError> {
    nl.set_link(
        name,
        &LinkChange {
            alias: Some(alias),
            up: Some(true),
            hairpin: Some(hairpin),
            ..Default::default()
        },
    )
}

/// A host-side veth just made, still down: marked as netd's, being made
/// (`driver::creating_alias`), and without IPv6 addresses of its own. It is a bridge
/// port and needs no IP; so it autoconfigures no link-local address and sends no
/// DAD, RS or MLD when it comes up. (netd wrote `disable_ipv6` through /proc before:
/// a sysctl write on a thread of its own and another round trip, per endpoint.)
fn host_port_created(nl: &mut Netlink, name: &str, alias: &str) -> Result<(), KernelError> {
    nl.set_link(
        name,
        &LinkChange {
            alias: Some(&crate::driver::creating_alias(alias)),
            no_ipv6_addrs: true,
            ..Default::default()
        },
    )
}

/// A veth whose setup failed is deleted again (its peer goes with it).
fn undo_on_error(nl: &mut Netlink, name: &str, res: Result<(), KernelError>) -> Result<(), KernelError> {
    if res.is_err() {
        if let Err(e) = nl.delete_link(name) {
            tracing::warn!(link = %name, error = %e, "cleanup of failed veth failed");
        }
    }
    res
}

/// A stable, locally administered unicast MAC for a bridge, derived from its name
/// (FNV-1a), so a recreated bridge keeps the MAC sandboxes may still have cached.
pub fn bridge_mac(name: &str) -> [u8; 6] {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    let b = h.to_be_bytes();
    // 0x02: locally administered; bit 0 clear: unicast.
    [(b[0] & 0xfc) | 0x02, b[1], b[2], b[3], b[4], b[5]]
}

impl Kernel for LinuxKernel {
    fn allow_in_docker_forward(&self) -> Result<(), KernelError> {
        super::iptables::ensure_docker_user_accept(self.host_path.as_deref(), "netd-+").map(drop)
    }

    fn apply(&self, step: &Step) -> Result<Applied, KernelError> {
        let made = match step {
            Step::EnsureBridge(b) => return self.ensure_bridge(b),
            Step::EnsureVlanGateway(g) => return self.ensure_vlan_gateway(g),
            Step::EnsureVlanParent(v) => return self.ensure_vlan_parent(v),
            Step::EnsureVxlan(v) => return self.ensure_vxlan(v),
            Step::EnsureDummyParent(d) => return self.ensure_dummy_parent(d),
            Step::CreateNetns { path } => netns::create(path),
            Step::BindHostNetns { path } => self.bind_host_netns(path),
            Step::DeleteNetns { path } => netns::delete(path),
            Step::CreateVeth(v) => self.create_veth(v),
            Step::CreateHostVeth(v) => self.create_host_veth(v),
            Step::CreateMacvlan(m) => self.create_macvlan(m),
            Step::DeleteLink { name, netns } => self.delete_link(name, netns.as_deref()),
            Step::Sysctl { key, value } => sysctl::write_in(&self.host, key, value),
            Step::EnsureSandboxLink(sb) => return super::sandbox_link::ensure(sb),
            Step::WriteResolvConf { dir, contents } => super::etc_netns::write_resolv_conf(dir, contents),
            Step::DeleteResolvConf { dir } => super::etc_netns::delete(dir),
        };
        made.map(|_| Applied::Made)
    }

    fn owned_links(&self) -> Result<Vec<OwnedLink>, KernelError> {
        let links = self.nl().links()?;
        let name_of = |idx: u32| links.iter().find(|l| l.index == idx).map(|l| l.name.clone());
        let netd_bridge = |idx: u32| {
            links
                .iter()
                .any(|b| b.index == idx && b.alias.as_ref().is_some_and(|a| a.starts_with(OWNED_PREFIX)))
        };
        Ok(links
            .iter()
            .filter_map(|l| {
                // A veth is marked just after it is created (the kernel takes no alias in
                // the create request); one a crash caught in between is still a port of a
                // netd bridge, which nothing but netd adds ports to. Reported with an
                // empty alias, which no record explains, so reconcile removes it.
                let unmarked_port = l.alias.is_none()
                    && ((l.kind.as_deref() == Some("veth") && l.master.is_some_and(netd_bridge))
                        || super::macvlan::is_unmarked_tmp(l));
                let alias = match l.alias.as_ref().filter(|a| a.starts_with(OWNED_PREFIX)) {
                    Some(a) => a,
                    None if unmarked_port => &String::new(),
                    None => return None,
                };
                Some(OwnedLink {
                    name: l.name.clone(),
                    alias: alias.clone(),
                    kind: l.kind.clone().unwrap_or_default(),
                    master: l.master.and_then(name_of),
                })
            })
            .collect())
    }

    fn owned_links_in(&self, netns: &Path) -> Result<Vec<OwnedLink>, KernelError> {
        self.owned_links_in_netns(netns)
    }

    fn host_link_listed(&self, name: &str) -> Result<bool, KernelError> {
        Ok(self.nl().index_rcu(name)?.is_some())
    }

    fn link_exists(&self, name: &str, netns: Option<&Path>) -> Result<bool, KernelError> {
        match netns {
            None => Ok(self.nl().link(name)?.is_some()),
            Some(p) if !netns::is_alive(p) => Ok(false),
            Some(p) => Ok(Netlink::open_in(p)?.link(name)?.is_some()),
        }
    }

    fn routed_prefixes(&self) -> Result<Vec<IpNetwork>, KernelError> {
        let mut out: Vec<IpNetwork> = self
            .nl()
            .routes()?
            .into_iter()
            // Default routes would overlap everything; local/broadcast/multicast entries
            // (the `local` table) are covered by their connected routes.
            .filter(|r| r.dst.prefix() != 0)
            .filter(|r| {
                matches!(
                    r.kind,
                    RouteType::Unicast | RouteType::BlackHole | RouteType::Unreachable | RouteType::Prohibit
                )
            })
            .map(|r| r.dst)
            .collect();
        out.sort_by_key(|n| (n.is_ipv6(), n.ip(), n.prefix()));
        out.dedup();
        Ok(out)
    }

    fn local_addrs(&self) -> Result<Vec<IpAddr>, KernelError> {
        let mut out: Vec<IpAddr> = self.nl().addresses()?.into_iter().map(|a| a.net.ip()).collect();
        out.sort();
        out.dedup();
        Ok(out)
    }

    fn netns_alive(&self, path: &Path) -> bool {
        netns::is_alive(path)
    }

    fn bridge_vlan_filtering(&self) -> Result<bool, KernelError> {
        super::vlan::probe(&mut self.nl())
    }

    fn ipvlan_supported(&self) -> Result<bool, KernelError> {
        super::ipvlan::probe(&mut self.nl(), netlink_packet_route::link::InfoKind::IpVlan)
    }

    fn vlan_supported(&self) -> Result<bool, KernelError> {
        super::ipvlan::probe(&mut self.nl(), netlink_packet_route::link::InfoKind::Vlan)
    }

    fn dummy_supported(&self) -> Result<bool, KernelError> {
        super::ipvlan::probe(&mut self.nl(), netlink_packet_route::link::InfoKind::Dummy)
    }

    fn link_addrs(&self) -> Result<std::collections::BTreeMap<String, Vec<IpNetwork>>, KernelError> {
        let mut nl = self.nl();
        let names: std::collections::BTreeMap<u32, String> =
            nl.links()?.into_iter().map(|l| (l.index, l.name)).collect();
        let mut out = std::collections::BTreeMap::<String, Vec<IpNetwork>>::new();
        for a in nl.addresses()?.into_iter().filter(|a| a.scope == 0) {
            if let Some(n) = names.get(&a.index) {
                out.entry(n.clone()).or_default().push(a.net);
            }
        }
        Ok(out)
    }

    fn nft_chain_exists(&self, family: &str, table: &str, chain: &str) -> Result<bool, KernelError> {
        let (f, t, c) = (family.to_string(), table.to_string(), chain.to_string());
        let ask = move || super::nft_table::chains_exist(&t, &[(&f, &c)]);
        let there = match &self.host_path {
            None => ask()?,
            Some(_) => self.host.run(ask)??,
        };
        Ok(there.first().copied().unwrap_or(false))
    }

    fn nft(&self, batch: &crate::firewall::batch::Batch) -> Result<(), KernelError> {
        // Element changes (every attach and detach) go to the kernel directly; the rest,
        // and any set this cannot encode, through libnftables (see `nft_elements`).
        if let Some(changes) = batch.element_changes() {
            match self.with_nfnl(|c| c.apply(&changes)) {
                Ok(()) => return Ok(()),
                Err(super::nft_elements::Error::Kernel(e)) => return Err(e),
                Err(super::nft_elements::Error::Unsupported) => {}
            }
        }
        // Service batches too: libnftables would dump every chain first (`nft_svc`).
        if let Some(cmds) = batch.svc_commands() {
            match self.with_nfnl(|c| c.apply_svc(&cmds).map_err(Into::into)) {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(super::nft_elements::Error::Kernel(e)) => return Err(e),
                Err(super::nft_elements::Error::Unsupported) => {}
            }
        }
        self.with_nft(|n| n.run(&batch.to_string()).map(drop))
    }

    fn ipvs_setup(&self) -> Result<(), KernelError> {
        // Resolving the family loads ip_vs where it is a module; its sysctls exist after.
        self.with_ipvs(|_| Ok(()))?;
        let items: Vec<(String, String, bool)> = super::ipvs::SYSCTLS
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string(), false))
            .collect();
        sysctl::write_all_in(&self.host, &items)
    }

    fn ipvs_table(&self) -> Result<Vec<(super::ipvs::Service, Vec<super::ipvs::Dest>)>, KernelError> {
        self.with_ipvs(|c| Ok(c.table()?))
    }

    fn ipvs_dests(&self, key: &super::ipvs::ServiceKey) -> Result<Vec<super::ipvs::Dest>, KernelError> {
        self.with_ipvs(|c| Ok(c.dests(key)?))
    }

    fn ipvs_apply(&self, ops: &[super::ipvs::Op]) -> Result<(), KernelError> {
        self.with_ipvs(|c| Ok(c.apply(ops)?))
    }

    fn nft_objects(&self, family: &str, table: &str) -> Result<super::nft::NftObjects, KernelError> {
        self.with_nft(|n| n.objects(family, table))
    }

    fn nft_table(&self, family: &str, name: &str) -> Result<Option<super::nft_table::NftTable>, KernelError> {
        // One nfnetlink request, not libnftables' cache fill (see `nft_table`).
        let fam = super::nfnetlink::family_number(family)
            .ok_or_else(|| KernelError::Nft(format!("unknown nft family {family:?}")))?;
        self.with_nfnl(|c| c.table(fam, name).map_err(Into::into))
            .map_err(|e| match e {
                super::nft_elements::Error::Kernel(e) => e,
                super::nft_elements::Error::Unsupported => KernelError::Nft("table lookup".into()),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bridge_mac_is_stable_local_unicast() {
        let m = bridge_mac("netd-web");
        assert_eq!(m, bridge_mac("netd-web"));
        assert_ne!(m, bridge_mac("netd-db"));
        assert_eq!(m[0] & 0x03, 0x02);
    }
}
