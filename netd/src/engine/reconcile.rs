//! Reconcile: make the kernel match the store, in both directions, without touching what
//! is already right (a healthy veth is never recreated, so flows through it keep going
//! across a daemon restart). Two passes share the phases below. `reconcile` runs at
//! start-up: every network is ensured and the whole ruleset written. `repair` runs from
//! the daemon's loop whenever the kernel reports a change (`kernel::watch`), netd's own
//! included: it redoes only what it finds missing, so a pass over a healthy host changes
//! nothing and logs nothing at info level, and netd's changes cannot feed a loop of
//! repairs. Either pass goes on past a network or sandbox it cannot bring in line and
//! reports it (`ReconcileReport::failed`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Instant;

use ipnetwork::IpNetwork;
use serde::Serialize;

use super::sandbox::PendingSandbox;
use super::{Engine, EngineError, Result};
use crate::driver::{self, parse_alias, AliasOwner};
use crate::firewall::{ruleset, TABLE};
use crate::kernel::OwnedLink;
use crate::model::{NetMode, Network, Sandbox};
use crate::plan::{self, Applied, Step};
use crate::store::{self, Bucket, Txn};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Kernel objects nothing in the store refers to (leftovers of interrupted operations).
    pub removed: Vec<String>,
    /// Objects the store has and the kernel lacked (or had only in part).
    pub recreated: Vec<String>,
    /// What could not be brought in line, and why; the pass went on past each.
    pub failed: Vec<String>,
    /// Leases whose endpoint no longer exists.
    pub released_leases: usize,
    pub networks: usize,
    pub endpoints: usize,
    pub millis: u128,
}

impl ReconcileReport {
    /// Whether the pass changed something or failed somewhere.
    pub fn acted(&self) -> bool {
        !(self.removed.is_empty()
            && self.recreated.is_empty()
            && self.failed.is_empty()
            && self.released_leases == 0)
    }
}

/// Host links netd keeps, by name.
type Present = BTreeMap<String, OwnedLink>;

impl Engine {
    /// The start-up pass (and the short-lived CLI's): refuses another engine's tables,
    /// clears interrupted operations, ensures every object and rewrites the ruleset.
    pub fn reconcile(&mut self) -> Result<ReconcileReport> {
        let t0 = Instant::now();
        // Before anything: reconcile deletes netd links the store does not know, and
        // rewrites the tables; both would take another engine's things.
        let table = self
            .kernel
            .nft_table("inet", TABLE)
            .map_err(EngineError::kernel("look up netd's nftables table"))?;
        self.check_owner(table.as_ref())?;
        self.reaper.drain();
        let mut r = ReconcileReport::default();
        let mut txn = Txn::new();
        self.clear_pending(&mut txn, &mut r)?;
        let links = self
            .kernel
            .owned_links()
            .map_err(EngineError::kernel("list links"))?;
        let present = self.remove_unknown_links(links, &BTreeSet::new(), &mut r);
        self.ensure_networks(&present, None, &mut r);
        self.ensure_sandboxes(&present, None, true, &mut r);
        self.release_stale_leases(&mut txn, &mut r);
        self.store.commit(&txn)?;
        // The whole ruleset, in one transaction (flows keep going: the new rules accept
        // established traffic from the moment they replace the old).
        self.write_firewall()?;
        r.millis = t0.elapsed().as_millis();
        for f in &r.failed {
            tracing::error!("reconcile could not repair {f}");
        }
        tracing::info!(
            networks = r.networks,
            endpoints = r.endpoints,
            removed = r.removed.len(),
            recreated = r.recreated.len(),
            failed = r.failed.len(),
            released_leases = r.released_leases,
            ms = r.millis as u64,
            "reconciled"
        );
        Ok(r)
    }

    /// The loop's pass, after the kernel reported a change: links and addresses of the
    /// host, netd's nftables chains, and the addresses and routes inside the sandboxes
    /// whose namespaces reported one (`inside`, by namespace path). Only what is found
    /// missing is redone, each repair logged; deferred deletions under way are left to
    /// the reaper.
    pub fn repair(&mut self, inside: &BTreeSet<PathBuf>) -> ReconcileReport {
        let t0 = Instant::now();
        let mut r = ReconcileReport::default();
        let busy = self.reaper.pending();
        match self.kernel.owned_links() {
            Ok(links) => {
                let present = self.remove_unknown_links(links, &busy, &mut r);
                match self.kernel.link_addrs() {
                    Ok(addrs) => self.ensure_networks(&present, Some(&addrs), &mut r),
                    Err(e) => r.failed.push(format!("host addresses: {e}")),
                }
                self.ensure_sandboxes(&present, Some(inside), false, &mut r);
            }
            Err(e) => r.failed.push(format!("host links: {e}")),
        }
        self.repair_firewall(&mut r);
        if r.recreated.iter().any(|x| x.starts_with("netns ")) {
            // A namespace made anew needs the DNS server's sockets opened in it again.
            self.sync_dns();
        }
        r.millis = t0.elapsed().as_millis();
        for x in &r.removed {
            tracing::info!("repaired: removed {x}");
        }
        for x in &r.recreated {
            tracing::info!("repaired: recreated {x}");
        }
        for f in &r.failed {
            tracing::error!("could not repair {f}");
        }
        self.emit_repairs(&r);
        tracing::debug!(
            us = t0.elapsed().as_micros() as u64,
            acted = r.acted(),
            "repair pass"
        );
        r
    }

    /// Operations cut short before their final commit: their namespace and resolv.conf go.
    fn clear_pending(&mut self, txn: &mut Txn, r: &mut ReconcileReport) -> Result<()> {
        for (key, p) in store::load::<PendingSandbox>(self.store.as_ref(), Bucket::Pending)? {
            let name = key.strip_prefix("sandbox/").unwrap_or(&key);
            if !self.sandboxes.contains_key(name) {
                let steps = [
                    Step::DeleteNetns {
                        path: PathBuf::from(&p.netns),
                    },
                    Step::DeleteResolvConf {
                        dir: self.cfg.etc_netns_dir.join(name),
                    },
                ];
                for e in plan::teardown(self.kernel.as_ref(), &steps) {
                    tracing::warn!(netns = %p.netns, error = %e, "could not remove a leftover");
                }
                r.removed.push(format!("netns {}", p.netns));
            }
            txn.delete(Bucket::Pending, &key);
        }
        Ok(())
    }

    /// Deletes the links marked as netd's that the store does not explain (except those
    /// the reaper is deleting already, `busy`); answers the ones kept.
    fn remove_unknown_links(
        &self,
        links: Vec<OwnedLink>,
        busy: &BTreeSet<String>,
        r: &mut ReconcileReport,
    ) -> Present {
        let mut present = Present::new();
        for l in links {
            if busy.contains(&l.name) {
                continue;
            }
            let keep = match parse_alias(&l.alias) {
                Some(AliasOwner::Network(n)) => self.networks.get(&n).is_some_and(|x| x.owns_link(&l.name)),
                Some(AliasOwner::Endpoint { sandbox, network }) => self
                    .sandboxes
                    .get(&sandbox)
                    .and_then(|s| s.endpoint(&network))
                    .is_some_and(|e| e.host_ifname == l.name),
                // A bridge VLAN networks share: kept while one of them uses it.
                None => self.is_vlan_bridge(&l.name, &l.alias),
            };
            if keep {
                present.insert(l.name.clone(), l);
                continue;
            }
            let step = Step::DeleteLink {
                name: l.name.clone(),
                netns: None,
            };
            if let Err(e) = self.kernel.apply(&step) {
                r.failed.push(format!("leftover link {}: {e}", l.name));
                continue;
            }
            r.removed.push(format!("link {} ({})", l.name, l.alias));
        }
        present
    }

    /// Each network's bridge (and VLAN gateway) with its gateway addresses. `addrs`
    /// (the host's, by link) makes this the loop's pass: only a network with something
    /// missing is ensured again. Without, every network is (start-up: the ensure is
    /// idempotent and also sets the sysctls again). A shared VLAN bridge is found, not
    /// made, by all but one of its networks, so a failure of one never undoes it.
    fn ensure_networks(
        &self,
        present: &Present,
        addrs: Option<&BTreeMap<String, Vec<IpNetwork>>>,
        r: &mut ReconcileReport,
    ) {
        for net in self.networks.values() {
            r.networks += 1;
            if net.has_parent() {
                // Nothing of its own in the kernel but a dotted or dummy parent netd made,
                // which is made again when missing (its children went with it and are recreated
                // with the sandboxes); otherwise its parent is the host's.
                self.ensure_vlan_parent(net, r);
                continue;
            }
            let steps = self.network_up(net);
            let missing = network_drift(&steps, present, addrs);
            if missing.is_empty() && addrs.is_some() {
                continue;
            }
            match plan::execute(self.kernel.as_ref(), &steps) {
                Ok(()) => r.recreated.extend(missing),
                Err(e) => r.failed.push(format!("network {}: {e}", net.name)),
            }
        }
    }

    /// Every sandbox's links: a dead namespace is rebuilt whole; a live one gets the
    /// endpoints whose veth (or macvlan child) is missing or off its bridge; and inside
    /// the namespaces in `inside` (all with `None`), missing addresses and routes back.
    fn ensure_sandboxes(
        &self,
        present: &Present,
        inside: Option<&BTreeSet<PathBuf>>,
        startup: bool,
        r: &mut ReconcileReport,
    ) {
        let any_macvlan = self.networks.values().any(|n| n.has_parent());
        for sb in self.sandboxes.values() {
            r.endpoints += sb.endpoints.len();
            let netns = PathBuf::from(&sb.netns);
            let alive = self.kernel.netns_alive(&netns);
            if !alive && sb.external {
                // The runtime's namespace is gone (its container ended); its veths went
                // with it. The record stays until the runtime's DEL or GC says so.
                // Docker endpoints have no path at all (dockerd's namespaces are not
                // visible from here): nothing is gone, nothing to say.
                if startup && !sb.netns.is_empty() {
                    tracing::info!(sandbox = %sb.name, netns = %sb.netns, "external namespace is gone; waiting for DEL/GC");
                }
                continue;
            }
            let look_inside = alive && inside.is_none_or(|s| s.contains(&netns));
            // macvlan children are looked for inside too: a pass that does not look
            // there leaves them be.
            let children = look_inside && any_macvlan;
            let (steps, remade) = self.sandbox_plan(sb, &netns, alive, children, present, r);
            for s in &steps {
                if let Err(e) = self.kernel.apply(s) {
                    r.failed
                        .push(format!("sandbox {}: {}: {e}", sb.name, plan::describe(s)));
                }
            }
            if look_inside {
                self.ensure_inside(sb, &netns, &remade, r);
            }
        }
    }

    /// The steps that bring `sb`'s links back, and the networks whose endpoint they remake.
    fn sandbox_plan(
        &self,
        sb: &Sandbox,
        netns: &Path,
        alive: bool,
        look_for_children: bool,
        present: &Present,
        r: &mut ReconcileReport,
    ) -> (Vec<Step>, BTreeSet<String>) {
        let mut steps = Vec::new();
        let mut remade = BTreeSet::new();
        // macvlan children live inside the sandbox: look there, and remove the ones no
        // endpoint explains (an attach cut short before its commit).
        let mut children = BTreeSet::new();
        if look_for_children {
            match self.kernel.owned_links_in(netns) {
                Ok(links) => {
                    for l in links {
                        if self.macvlan_link_is_known(sb, &l.name, &l.alias) {
                            children.insert(l.name);
                        } else {
                            steps.push(Step::DeleteLink {
                                name: l.name.clone(),
                                netns: Some(netns.to_path_buf()),
                            });
                            r.removed
                                .push(format!("link {} in {} ({})", l.name, sb.netns, l.alias));
                        }
                    }
                }
                Err(e) => r.failed.push(format!("sandbox {}: list its links: {e}", sb.name)),
            }
        }
        if !alive {
            steps.extend(
                sb.endpoints
                    .iter()
                    .map(|e| driver::endpoint_down(self.networks.get(&e.network), e, netns)),
            );
            steps.push(Step::DeleteNetns {
                path: netns.to_path_buf(),
            });
            steps.push(if sb.mode == NetMode::Host {
                Step::BindHostNetns {
                    path: netns.to_path_buf(),
                }
            } else {
                Step::CreateNetns {
                    path: netns.to_path_buf(),
                }
            });
            r.recreated.push(format!("netns {}", sb.netns));
        }
        for (i, ep) in sb.endpoints.iter().enumerate() {
            let Some(net) = self.networks.get(&ep.network) else {
                continue;
            };
            // A veth off its bridge (the bridge was deleted and made again) carries
            // nothing: it is made again too.
            let there = if net.has_parent() {
                !look_for_children || children.contains(&ep.ifname)
            } else {
                present
                    .get(&ep.host_ifname)
                    .is_some_and(|l| l.master.as_deref() == Some(net.bridge.as_str()))
            };
            if alive && there {
                continue;
            }
            if alive {
                // The old pair goes (the host side, if off its bridge; the peer's name).
                if !net.has_parent() && present.contains_key(&ep.host_ifname) {
                    steps.push(driver::endpoint_down(Some(net), ep, netns));
                }
                steps.push(Step::DeleteLink {
                    name: ep.ifname.clone(),
                    netns: Some(netns.to_path_buf()),
                });
            }
            steps.push(driver::endpoint_up(net, &sb.name, netns, ep, i == 0));
            remade.insert(ep.network.clone());
            r.recreated.push(if net.has_parent() {
                format!(
                    "macvlan {} in {} ({}/{})",
                    ep.ifname, sb.netns, sb.name, ep.network
                )
            } else {
                format!(
                    "veth {} of sandbox {} on network {}",
                    ep.host_ifname, sb.name, ep.network
                )
            });
        }
        (steps, remade)
    }

    /// Addresses and routes inside `sb`'s namespace, for the endpoints not just remade.
    fn ensure_inside(&self, sb: &Sandbox, netns: &Path, remade: &BTreeSet<String>, r: &mut ReconcileReport) {
        for (i, ep) in sb.endpoints.iter().enumerate() {
            let Some(net) = self.networks.get(&ep.network) else {
                continue;
            };
            if remade.contains(&ep.network) {
                continue;
            }
            let Some(side) = driver::sandbox_side(net, &sb.name, netns, ep, i == 0) else {
                continue;
            };
            match self.kernel.apply(&Step::EnsureSandboxLink(side)) {
                Ok(Applied::Made) => r.recreated.push(format!(
                    "addresses and routes of {} in sandbox {} (network {})",
                    ep.ifname, sb.name, ep.network
                )),
                Ok(Applied::Found) => {}
                Err(e) => r.failed.push(format!(
                    "sandbox {}: {} on network {}: {e}",
                    sb.name, ep.ifname, ep.network
                )),
            }
        }
    }

    /// Leases without an endpoint.
    fn release_stale_leases(&mut self, txn: &mut Txn, r: &mut ReconcileReport) {
        let owners: BTreeSet<String> = self
            .sandboxes
            .values()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .map(move |e| format!("{}/{}", s.name, e.network))
            })
            .chain(self.vip_owners())
            .collect();
        for (key, pool) in self.pools.iter_mut() {
            if super::docker::is_ipam_pool(key) {
                // Docker's IPAM leases belong to dockerd, not to endpoints: it releases them.
                continue;
            }
            let stale: BTreeSet<String> = pool
                .leases
                .values()
                .filter(|o| !owners.contains(*o))
                .cloned()
                .collect();
            let mut released = 0;
            for o in stale {
                released += pool.release_owner(&o);
            }
            if released > 0 {
                r.released_leases += released;
                txn.put(Bucket::Pools, key, pool);
            }
        }
    }

    /// The whole ruleset the model calls for, in one transaction.
    fn write_firewall(&mut self) -> Result<()> {
        let want = self.desired_fw();
        self.kernel
            .nft(&ruleset::full(&want, &self.cfg.owner))
            .map_err(EngineError::kernel("firewall"))?;
        self.fw = want;
        // The services' datapath after the table exists: exactly the services the store
        // has (leftovers of services removed meanwhile deleted; the rest rewritten as
        // they were, in one transaction).
        let svc = self.desired_services();
        self.lb.set_owned(self.vip_prefixes());
        self.lb_hints();
        self.lb.sync_full(&svc).map_err(EngineError::kernel(format!(
            "service datapath ({})",
            self.lb.kind()
        )))?;
        self.svc_fw = svc;
        Ok(())
    }

    /// The ruleset written again when one of netd's tables or chains is missing (`nft
    /// flush ruleset`, `nft delete chain ...`). Rules deleted inside a chain are not
    /// looked for.
    fn repair_firewall(&mut self, r: &mut ReconcileReport) {
        let mut missing = Vec::new();
        let mut gone = Vec::new();
        for family in ["inet", "bridge"] {
            match self.kernel.nft_table(family, TABLE) {
                Ok(Some(_)) => {}
                Ok(None) => gone.push(family),
                Err(e) => {
                    r.failed.push(format!("nftables table {family} {TABLE}: {e}"));
                    return;
                }
            }
        }
        missing.extend(gone.iter().map(|f| format!("nftables table {f} {TABLE}")));
        for (family, chain) in ruleset::chains().filter(|(f, _)| !gone.contains(&f.name())) {
            match self.kernel.nft_chain_exists(family.name(), TABLE, chain) {
                Ok(true) => {}
                Ok(false) => missing.push(format!("nftables chain {family} {TABLE} {chain}")),
                Err(e) => {
                    r.failed
                        .push(format!("nftables chain {family} {TABLE} {chain}: {e}"));
                    return;
                }
            }
        }
        if missing.is_empty() {
            return;
        }
        match self.write_firewall() {
            Ok(()) => r.recreated.extend(missing),
            Err(e) => r.failed.push(format!("nftables ruleset: {e}")),
        }
    }

    /// A dotted parent (`eth0.10`) or the dummy parent of `net` made again when missing.
    fn ensure_vlan_parent(&self, net: &Network, r: &mut ReconcileReport) {
        let Some(parent) = net.made_parent() else {
            return;
        };
        match self.kernel.link_exists(parent, None) {
            Ok(true) => return,
            Ok(false) => {}
            Err(e) => {
                r.failed
                    .push(format!("network {}: look up parent {parent}: {e}", net.name));
                return;
            }
        }
        match plan::execute(self.kernel.as_ref(), &driver::network_up(net)) {
            Ok(()) => r.recreated.push(match net.vlan_parent() {
                Some((link, id)) => format!("vlan {parent} (link {link} id {id})"),
                None => format!("dummy {parent}"),
            }),
            Err(e) => r.failed.push(format!("network {}: {e}", net.name)),
        }
    }

    /// Whether a link with a `netd:` alias inside `sb`'s namespace is one of its macvlan
    /// endpoints, under the name the store has for it.
    fn macvlan_link_is_known(&self, sb: &Sandbox, name: &str, alias: &str) -> bool {
        match parse_alias(alias) {
            Some(AliasOwner::Endpoint { sandbox, network }) => {
                sandbox == sb.name
                    && self.networks.get(&network).is_some_and(|n| n.has_parent())
                    && sb.endpoint(&network).is_some_and(|e| e.ifname == name)
            }
            _ => false,
        }
    }
}

/// What of a network's links (`steps`: its `network_up`) is missing from the host:
/// a link, or (with `addrs`) one of its gateway addresses. In report words.
fn network_drift(
    steps: &[Step],
    present: &Present,
    addrs: Option<&BTreeMap<String, Vec<IpNetwork>>>,
) -> Vec<String> {
    let mut out = Vec::new();
    for s in steps {
        let (kind, name, want) = match s {
            Step::EnsureBridge(b) => ("bridge", &b.name, &b.all_addrs()),
            Step::EnsureVlanGateway(g) => ("gateway link", &g.name, &g.addrs),
            _ => continue,
        };
        if !present.contains_key(name) {
            out.push(format!("{kind} {name}"));
            continue;
        }
        let have = addrs.and_then(|a| a.get(name));
        for w in want {
            if addrs.is_some() && !have.is_some_and(|h| h.contains(w)) {
                out.push(format!("address {w} on {kind} {name}"));
            }
        }
    }
    out
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
