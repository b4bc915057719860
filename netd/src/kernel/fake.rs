//! An in-memory `Kernel` for unit tests of plans and the engine: records every step in
//! `ip`-like words and keeps just enough state (links, namespaces, nft batches) to assert on.

use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use ipnetwork::IpNetwork;

use super::{Kernel, KernelError, OwnedLink};
use crate::plan::{describe, Applied, Step};

#[derive(Default)]
struct State {
    log: Vec<String>,
    links: BTreeSet<String>,
    aliases: Vec<(String, String)>,
    netns: BTreeSet<String>,
    nft: Vec<String>,
    fail_on: Option<String>,
    routes: Vec<IpNetwork>,
    /// Links inside sandbox namespaces: (netns path, name, alias).
    ns_links: Vec<(String, String, String)>,
    /// A kernel without CONFIG_BRIDGE_VLAN_FILTERING.
    no_vlan: bool,
    /// A kernel without CONFIG_IPVLAN, or without CONFIG_VLAN_8021Q.
    no_ipvlan: bool,
    no_8021q: bool,
    /// A kernel without CONFIG_DUMMY.
    no_dummy: bool,
    /// The comment of netd's inet table, once one exists: the first `add table inet
    /// netd { comment "..." }` sets it, as the kernel keeps a table's first comment.
    table_comment: Option<String>,
    /// Files written by steps (resolv.conf), by path.
    files: BTreeMap<PathBuf, String>,
    /// Host links' masters (veth -> bridge), and bridges' and gateways' addresses.
    masters: BTreeMap<String, String>,
    addrs: BTreeMap<String, Vec<IpNetwork>>,
    /// Chains deleted behind netd's back (`family name`), until a full ruleset comes.
    lost_chains: BTreeSet<String>,
    /// Sandbox interfaces (`netns:ifname`) that lost an address or route.
    broken_sandbox_links: BTreeSet<String>,
    /// Networks whose gateway step fails (`ensure veth NAME ...` for any NAME here).
    fail_gateways: BTreeSet<String>,
    ipvs: super::fake_ipvs::FakeIpvs,
}

#[derive(Default)]
pub struct FakeKernel {
    st: Mutex<State>,
}

impl FakeKernel {
    fn st(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|e| e.into_inner())
    }
    /// Make the step whose description equals `what` fail.
    pub fn fail_on(&self, what: &str) {
        self.st().fail_on = Some(what.to_string());
    }
    /// Act as a kernel whose bridges cannot filter by VLAN.
    pub fn without_vlan_filtering(&self) {
        self.st().no_vlan = true;
    }
    /// Act as a kernel without ipvlan links.
    pub fn without_ipvlan(&self) {
        self.st().no_ipvlan = true;
    }
    /// Act as a kernel without dummy links.
    pub fn without_dummy(&self) {
        self.st().no_dummy = true;
    }
    /// Act as a kernel without 802.1Q links.
    pub fn without_8021q(&self) {
        self.st().no_8021q = true;
    }
    /// The alias of host link `name`, if it has one.
    pub fn alias_of(&self, name: &str) -> Option<String> {
        let st = self.st();
        st.aliases.iter().find(|(n, _)| n == name).map(|(_, a)| a.clone())
    }
    pub fn clear_failure(&self) {
        let mut st = self.st();
        st.fail_on = None;
        st.fail_gateways.clear();
    }
    /// A link someone else made in the host namespace (a macvlan parent, say).
    pub fn add_link(&self, name: &str) {
        self.st().links.insert(name.to_string());
    }
    pub fn add_route(&self, n: IpNetwork) {
        self.st().routes.push(n);
    }
    pub fn log(&self) -> Vec<String> {
        self.st().log.clone()
    }
    pub fn links(&self) -> BTreeSet<String> {
        self.st().links.clone()
    }
    pub fn netns(&self) -> BTreeSet<String> {
        self.st().netns.clone()
    }
    /// Links inside the sandbox namespace at `netns`.
    pub fn links_in(&self, netns: &str) -> BTreeSet<String> {
        self.st()
            .ns_links
            .iter()
            .filter(|(p, _, _)| p == netns)
            .map(|(_, n, _)| n.clone())
            .collect()
    }
    /// An address removed from a host link behind netd's back.
    pub fn remove_addr(&self, link: &str, addr: IpNetwork) {
        if let Some(a) = self.st().addrs.get_mut(link) {
            a.retain(|x| *x != addr);
        }
    }
    pub fn addrs_of(&self, link: &str) -> Vec<IpNetwork> {
        self.st().addrs.get(link).cloned().unwrap_or_default()
    }
    pub fn master_of(&self, link: &str) -> Option<String> {
        self.st().masters.get(link).cloned()
    }
    /// `nft delete chain FAMILY netd NAME` behind netd's back (`*`: the whole table).
    pub fn remove_chain(&self, family: &str, name: &str) {
        self.st().lost_chains.insert(format!("{family} {name}"));
    }
    /// A route or address removed inside a sandbox behind netd's back.
    pub fn break_sandbox_link(&self, netns: &str, ifname: &str) {
        self.st().broken_sandbox_links.insert(format!("{netns}:{ifname}"));
    }
    pub fn sandbox_link_broken(&self, netns: &str, ifname: &str) -> bool {
        self.st()
            .broken_sandbox_links
            .contains(&format!("{netns}:{ifname}"))
    }
    /// Make ensuring the VLAN gateway link `name` fail.
    pub fn fail_gateway(&self, name: &str) {
        self.st().fail_gateways.insert(name.to_string());
    }
    /// Files the steps wrote, by path.
    pub fn files(&self) -> BTreeMap<PathBuf, String> {
        self.st().files.clone()
    }
    /// A link removed behind netd's back (`ip link del`), with the peer of a veth.
    pub fn remove_link(&self, name: &str) {
        let mut st = self.st();
        st.links.remove(name);
        st.addrs.remove(name);
        st.masters.remove(name);
        // Ports of a deleted bridge stay, detached.
        st.masters.retain(|_, m| m != name);
        let peer_mark = format!("peer-of:{name}");
        let peers: Vec<String> = st
            .aliases
            .iter()
            .filter(|(_, a)| *a == peer_mark)
            .map(|(n, _)| n.clone())
            .collect();
        for p in &peers {
            st.links.remove(p);
        }
        st.aliases.retain(|(n, a)| n != name && *a != peer_mark);
    }
    pub fn nft_batches(&self) -> Vec<String> {
        self.st().nft.clone()
    }
    /// The IPVS table: services with their destinations.
    pub fn ipvs_table(&self) -> Vec<(crate::kernel::ipvs::Service, Vec<crate::kernel::ipvs::Dest>)> {
        self.st().ipvs.table.clone()
    }
    /// Every IPVS change so far, in `ipvsadm` words (`-a tcp 10.0.0.1:80 -r ... -w 1`).
    pub fn ipvs_log(&self) -> Vec<String> {
        self.st().ipvs.log.clone()
    }
    /// Whether `ipvs_setup` ran.
    pub fn ipvs_was_set_up(&self) -> bool {
        self.st().ipvs.setup
    }
    /// Someone else's IPVS service (or netd's from before a restart), with destinations.
    pub fn add_ipvs_service(&self, s: crate::kernel::ipvs::Service, dests: Vec<crate::kernel::ipvs::Dest>) {
        self.st().ipvs.table.push((s, dests));
    }
    /// The connection counts the kernel would report for one destination.
    pub fn set_ipvs_conns(
        &self,
        key: &crate::kernel::ipvs::ServiceKey,
        dest: std::net::SocketAddr,
        active: u32,
        inactive: u32,
    ) {
        self.st().ipvs.set_conns(key, dest, active, inactive);
    }
    /// Make the IPVS change with this index (0 = the next one) fail.
    pub fn fail_ipvs_at(&self, n: usize) {
        let mut st = self.st();
        let done = st.ipvs.log.len();
        st.ipvs.fail_at = Some(done + n);
    }
    /// netd's tables exist already, made by someone whose table comment is `comment`.
    pub fn tables_made_by(&self, comment: &str) {
        let mut st = self.st();
        st.nft
            .push(format!("add table inet netd {{ comment \"{comment}\"; }}"));
        st.table_comment = Some(comment.to_string());
    }
}

impl Kernel for FakeKernel {
    fn ipvs_setup(&self) -> Result<(), KernelError> {
        self.st().ipvs.setup = true;
        Ok(())
    }

    fn ipvs_table(&self) -> Result<Vec<(super::ipvs::Service, Vec<super::ipvs::Dest>)>, KernelError> {
        Ok(self.st().ipvs.table.clone())
    }

    fn ipvs_dests(&self, key: &super::ipvs::ServiceKey) -> Result<Vec<super::ipvs::Dest>, KernelError> {
        Ok(self.st().ipvs.dests(key))
    }

    fn ipvs_apply(&self, ops: &[super::ipvs::Op]) -> Result<(), KernelError> {
        Ok(self.st().ipvs.apply(ops)?)
    }

    fn apply(&self, step: &Step) -> Result<Applied, KernelError> {
        let mut st = self.st();
        let d = describe(step);
        if st.fail_on.as_deref() == Some(d.as_str()) {
            return Err(KernelError::Other(format!("injected failure: {d}")));
        }
        st.log.push(d);
        match step {
            Step::CreateNetns { path } | Step::BindHostNetns { path } => {
                if !st.netns.insert(path.display().to_string()) {
                    return Err(KernelError::Other("netns exists".into()));
                }
            }
            Step::DeleteNetns { path } => {
                let p = path.display().to_string();
                st.netns.remove(&p);
                st.ns_links.retain(|(np, _, _)| *np != p);
            }
            Step::CreateMacvlan(m) => match &m.sandbox {
                Some(sb) => {
                    let p = sb.netns.display().to_string();
                    if st.ns_links.iter().any(|(np, n, _)| *np == p && *n == sb.ifname) {
                        return Err(KernelError::Other(format!("link {} exists in {p}", sb.ifname)));
                    }
                    st.ns_links.push((p, sb.ifname.clone(), m.alias.clone()));
                }
                None => {
                    if !st.links.insert(m.tmp_name.clone()) {
                        return Err(KernelError::Other(format!("link {} exists", m.tmp_name)));
                    }
                    st.aliases.push((m.tmp_name.clone(), m.alias.clone()));
                }
            },
            Step::DeleteLink {
                name,
                netns: Some(ns),
            } => {
                let p = ns.display().to_string();
                st.ns_links.retain(|(np, n, _)| !(*np == p && n == name));
            }
            Step::EnsureBridge(b) => {
                st.addrs.insert(b.name.clone(), b.all_addrs());
                if !st.links.insert(b.name.clone()) {
                    return Ok(Applied::Found);
                }
                st.aliases.push((b.name.clone(), b.alias.clone()));
            }
            Step::CreateVeth(v) => {
                if !st.links.insert(v.host_name.clone()) {
                    return Err(KernelError::Other(format!("link {} exists", v.host_name)));
                }
                st.aliases.push((v.host_name.clone(), v.alias.clone()));
                st.masters.insert(v.host_name.clone(), v.bridge.clone());
                let key = format!("{}:{}", v.netns.display(), v.ifname);
                st.broken_sandbox_links.remove(&key);
            }
            Step::CreateHostVeth(v) => {
                if !st.links.insert(v.host_name.clone()) {
                    return Err(KernelError::Other(format!("link {} exists", v.host_name)));
                }
                st.masters.insert(v.host_name.clone(), v.bridge.clone());
                st.links.insert(v.peer_name.clone());
                st.aliases.push((v.host_name.clone(), v.alias.clone()));
                // Not a netd alias: only remembers that the peer dies with the host side.
                st.aliases
                    .push((v.peer_name.clone(), format!("peer-of:{}", v.host_name)));
            }
            Step::DeleteLink { name, netns: None } => {
                drop(st);
                self.remove_link(name);
                return Ok(Applied::Made);
            }
            Step::EnsureVlanGateway(g) => {
                if !st.links.contains(&g.bridge) {
                    return Err(KernelError::Other(format!("bridge {} does not exist", g.bridge)));
                }
                if st.fail_gateways.contains(&g.name) {
                    return Err(KernelError::Other(format!(
                        "injected failure: gateway {}",
                        g.name
                    )));
                }
                st.addrs.insert(g.name.clone(), g.addrs.clone());
                st.masters.insert(g.peer.clone(), g.bridge.clone());
                if !st.links.insert(g.name.clone()) {
                    return Ok(Applied::Found);
                }
                st.aliases.push((g.name.clone(), g.alias.clone()));
                st.links.insert(g.peer.clone());
                st.aliases.push((g.peer.clone(), format!("peer-of:{}", g.name)));
            }
            Step::EnsureVlanParent(v) => {
                if !st.links.contains(&v.link) {
                    return Err(KernelError::NoParent(v.link.clone()));
                }
                if !st.links.insert(v.name.clone()) {
                    return Ok(Applied::Found);
                }
                st.aliases.push((v.name.clone(), v.alias.clone()));
            }
            Step::EnsureVxlan(v) => {
                if !st.links.contains(&v.bridge) {
                    return Err(KernelError::Other(format!("bridge {} does not exist", v.bridge)));
                }
                st.masters.insert(v.name.clone(), v.bridge.clone());
                if !st.links.insert(v.name.clone()) {
                    return Ok(Applied::Found);
                }
            }
            Step::EnsureDummyParent(d) => {
                if !st.links.insert(d.name.clone()) {
                    return Ok(Applied::Found);
                }
                st.aliases.push((d.name.clone(), d.alias.clone()));
            }
            Step::Sysctl { .. } => {}
            Step::EnsureSandboxLink(sb) => {
                let key = format!("{}:{}", sb.netns.display(), sb.ifname);
                if !st.broken_sandbox_links.remove(&key) {
                    return Ok(Applied::Found);
                }
            }
            Step::WriteResolvConf { dir, contents } => {
                st.files.insert(dir.join("resolv.conf"), contents.clone());
            }
            Step::DeleteResolvConf { dir } => st.files.retain(|p, _| !p.starts_with(dir)),
        }
        Ok(Applied::Made)
    }

    fn owned_links(&self) -> Result<Vec<OwnedLink>, KernelError> {
        let st = self.st();
        Ok(st
            .aliases
            .iter()
            .filter(|(n, a)| a.starts_with("netd:") && st.links.contains(n))
            .map(|(n, a)| OwnedLink {
                name: n.clone(),
                alias: a.clone(),
                kind: if a.starts_with("netd:net=") {
                    "bridge"
                } else {
                    "veth"
                }
                .into(),
                master: st.masters.get(n).cloned(),
            })
            .collect())
    }

    fn owned_links_in(&self, netns: &Path) -> Result<Vec<OwnedLink>, KernelError> {
        let p = netns.display().to_string();
        Ok(self
            .st()
            .ns_links
            .iter()
            .filter(|(np, _, a)| *np == p && a.starts_with("netd:"))
            .map(|(_, n, a)| OwnedLink {
                name: n.clone(),
                alias: a.clone(),
                kind: "macvlan".into(),
                master: None,
            })
            .collect())
    }

    fn link_exists(&self, name: &str, netns: Option<&Path>) -> Result<bool, KernelError> {
        Ok(netns.is_some() || self.st().links.contains(name))
    }

    fn host_link_listed(&self, name: &str) -> Result<bool, KernelError> {
        Ok(self.st().links.contains(name))
    }

    fn routed_prefixes(&self) -> Result<Vec<IpNetwork>, KernelError> {
        Ok(self.st().routes.clone())
    }

    fn local_addrs(&self) -> Result<Vec<IpAddr>, KernelError> {
        Ok(vec!["127.0.0.1".parse().expect("literal")])
    }

    fn netns_alive(&self, path: &Path) -> bool {
        self.st().netns.contains(&path.display().to_string())
    }

    fn bridge_vlan_filtering(&self) -> Result<bool, KernelError> {
        Ok(!self.st().no_vlan)
    }

    fn ipvlan_supported(&self) -> Result<bool, KernelError> {
        Ok(!self.st().no_ipvlan)
    }

    fn vlan_supported(&self) -> Result<bool, KernelError> {
        Ok(!self.st().no_8021q)
    }

    fn dummy_supported(&self) -> Result<bool, KernelError> {
        Ok(!self.st().no_dummy)
    }

    fn link_addrs(&self) -> Result<BTreeMap<String, Vec<IpNetwork>>, KernelError> {
        let st = self.st();
        Ok(st
            .addrs
            .iter()
            .filter(|(l, _)| st.links.contains(*l))
            .map(|(l, a)| (l.clone(), a.clone()))
            .collect())
    }

    fn nft_chain_exists(&self, family: &str, _table: &str, chain: &str) -> Result<bool, KernelError> {
        let st = self.st();
        let lost = |c: &str| st.lost_chains.contains(&format!("{family} {c}"));
        Ok(!st.nft.is_empty() && !lost(chain) && !lost("*"))
    }

    fn nft(&self, batch: &crate::firewall::batch::Batch) -> Result<(), KernelError> {
        let batch = batch.to_string();
        let mut st = self.st();
        if batch.contains("add table") {
            st.lost_chains.clear();
        }
        if st.nft.is_empty() {
            let head = "add table inet netd { comment \"";
            st.table_comment = batch
                .lines()
                .find_map(|l| l.strip_prefix(head)?.split('"').next().map(str::to_string));
        }
        st.nft.push(batch);
        Ok(())
    }

    fn nft_table(
        &self,
        family: &str,
        _name: &str,
    ) -> Result<Option<super::nft_table::NftTable>, KernelError> {
        let st = self.st();
        let lost = st.lost_chains.contains(&format!("{family} *"));
        Ok((!st.nft.is_empty() && !lost).then(|| super::nft_table::NftTable {
            comment: st.table_comment.clone(),
        }))
    }
}
