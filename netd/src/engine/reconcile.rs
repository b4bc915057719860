//! Start-up reconcile: make the kernel match the store, in both directions, without
//! touching what is already right (a healthy veth is never recreated, so flows through
//! it keep going across a daemon restart).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::time::Instant;

use serde::Serialize;

use super::sandbox::PendingSandbox;
use super::{Engine, EngineError, Result};
use crate::driver::{self, parse_alias, AliasOwner};
use crate::firewall::ruleset;
use crate::model::NetMode;
use crate::plan::{self, Step};
use crate::store::{self, Bucket, Txn};

#[derive(Debug, Clone, Default, Serialize)]
pub struct ReconcileReport {
    /// Kernel objects nothing in the store refers to (leftovers of interrupted operations).
    pub removed: Vec<String>,
    /// Objects the store has and the kernel lacked.
    pub recreated: Vec<String>,
    /// Leases whose endpoint no longer exists.
    pub released_leases: usize,
    pub networks: usize,
    pub endpoints: usize,
    pub millis: u128,
}

impl Engine {
    pub fn reconcile(&mut self) -> Result<ReconcileReport> {
        let t0 = Instant::now();
        // Before anything: reconcile deletes netd links the store does not know, and
        // rewrites the tables; both would take another engine's things.
        let table = self
            .kernel
            .nft_table("inet", crate::firewall::TABLE)
            .map_err(EngineError::kernel("look up netd's nftables table"))?;
        self.check_owner(table.as_ref())?;
        self.reaper.drain();
        let mut r = ReconcileReport::default();
        let k = self.kernel.clone();
        let mut txn = Txn::new();

        // 1. Operations cut short before their final commit.
        for (key, p) in store::load::<PendingSandbox>(self.store.as_ref(), Bucket::Pending)? {
            let name = key.strip_prefix("sandbox/").unwrap_or(&key);
            if !self.sandboxes.contains_key(name) {
                if let Err(e) = k.apply(&Step::DeleteNetns {
                    path: PathBuf::from(&p.netns),
                }) {
                    tracing::warn!(netns = %p.netns, error = %e, "could not remove leftover netns");
                }
                let _ = std::fs::remove_dir_all(self.cfg.etc_netns_dir.join(name));
                r.removed.push(format!("netns {}", p.netns));
            }
            txn.delete(Bucket::Pending, &key);
        }

        // 2. Links marked as netd's that the store does not know.
        let links = k.owned_links().map_err(EngineError::kernel("list links"))?;
        let mut present = BTreeSet::new();
        for l in links {
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
                present.insert(l.name);
            } else {
                let step = Step::DeleteLink {
                    name: l.name.clone(),
                    netns: None,
                };
                if let Err(e) = k.apply(&step) {
                    tracing::warn!(link = %l.name, error = %e, "could not remove leftover link");
                }
                r.removed.push(format!("link {} ({})", l.name, l.alias));
            }
        }

        // 3. Bridges: ensure each (idempotent; re-adds a missing gateway address too).
        for net in self.networks.values() {
            if net.is_macvlan() {
                // Nothing of its own in the kernel; its parent is the host's.
                r.networks += 1;
                continue;
            }
            if !present.contains(&net.bridge) {
                r.recreated.push(format!("bridge {}", net.bridge));
            }
            plan::execute(k.as_ref(), &driver::network_up(net))?;
            r.networks += 1;
        }

        // 4. Sandboxes: a dead namespace is rebuilt whole; a live one only gets the
        //    endpoints whose veth (or macvlan child) is missing.
        let any_macvlan = self.networks.values().any(|n| n.is_macvlan());
        for sb in self.sandboxes.values() {
            let netns = PathBuf::from(&sb.netns);
            let alive = k.netns_alive(&netns);
            if !alive && sb.external {
                // The runtime's namespace is gone (its container ended); its veths went
                // with it. The record stays until the runtime's DEL or GC says so.
                // Docker endpoints have no path at all (dockerd's namespaces are not
                // visible from here): nothing is gone, nothing to say.
                if !sb.netns.is_empty() {
                    tracing::info!(sandbox = %sb.name, netns = %sb.netns, "external namespace is gone; waiting for DEL/GC");
                }
                r.endpoints += sb.endpoints.len();
                continue;
            }
            let mut steps = Vec::new();
            // macvlan children live inside the sandbox: look there, and remove the ones
            // no endpoint explains (an attach cut short before its commit).
            let mut inside = BTreeSet::new();
            if alive && any_macvlan {
                match k.owned_links_in(&netns) {
                    Ok(links) => {
                        for l in links {
                            if self.macvlan_link_is_known(sb, &l.name, &l.alias) {
                                inside.insert(l.name);
                            } else {
                                steps.push(Step::DeleteLink {
                                    name: l.name.clone(),
                                    netns: Some(netns.clone()),
                                });
                                r.removed
                                    .push(format!("link {} in {} ({})", l.name, sb.netns, l.alias));
                            }
                        }
                    }
                    Err(e) => {
                        tracing::warn!(sandbox = %sb.name, error = %e, "could not list links in the sandbox")
                    }
                }
            }
            if !alive {
                steps.extend(
                    sb.endpoints
                        .iter()
                        .map(|e| driver::endpoint_down(self.networks.get(&e.network), e, &netns)),
                );
                steps.push(Step::DeleteNetns { path: netns.clone() });
                steps.push(if sb.mode == NetMode::Host {
                    Step::BindHostNetns { path: netns.clone() }
                } else {
                    Step::CreateNetns { path: netns.clone() }
                });
                r.recreated.push(format!("netns {}", sb.netns));
            }
            for (i, ep) in sb.endpoints.iter().enumerate() {
                r.endpoints += 1;
                let net = &self.networks[&ep.network];
                let there = if net.is_macvlan() {
                    inside.contains(&ep.ifname)
                } else {
                    present.contains(&ep.host_ifname)
                };
                if alive && there {
                    continue;
                }
                if alive {
                    // The host side is gone, so the pair is gone; clear a stray peer name.
                    steps.push(Step::DeleteLink {
                        name: ep.ifname.clone(),
                        netns: Some(netns.clone()),
                    });
                }
                steps.push(driver::endpoint_up(net, &sb.name, &netns, ep, i == 0));
                r.recreated.push(if net.is_macvlan() {
                    format!(
                        "macvlan {} in {} ({}/{})",
                        ep.ifname, sb.netns, sb.name, ep.network
                    )
                } else {
                    format!("veth {} ({}/{})", ep.host_ifname, sb.name, ep.network)
                });
            }
            for s in &steps {
                if let Err(e) = k.apply(s) {
                    tracing::error!(sandbox = %sb.name, step = %plan::describe(s), error = %e, "reconcile step failed");
                }
            }
        }

        // 5. Leases without an endpoint.
        let owners: BTreeSet<String> = self
            .sandboxes
            .values()
            .flat_map(|s| {
                s.endpoints
                    .iter()
                    .map(move |e| format!("{}/{}", s.name, e.network))
            })
            .collect();
        for (key, pool) in self.pools.iter_mut() {
            if super::docker::is_ipam_pool(key) {
                // Docker's IPAM leases belong to dockerd, not to endpoints: it releases them.
                continue;
            }
            let stale: Vec<String> = pool
                .leases
                .values()
                .filter(|o| !owners.contains(*o))
                .cloned()
                .collect::<BTreeSet<_>>()
                .into_iter()
                .collect();
            for o in stale {
                r.released_leases += pool.release_owner(&o);
            }
            if r.released_leases > 0 {
                txn.put(Bucket::Pools, key, pool);
            }
        }
        self.store.commit(&txn)?;

        // 6. Firewall: the whole ruleset, in one transaction (flows keep going: the new
        //    rules accept established traffic from the moment they replace the old).
        let want = self.desired_fw();
        k.nft(&ruleset::full(&want, &self.cfg.owner))
            .map_err(EngineError::kernel("firewall"))?;
        self.fw = want;
        r.millis = t0.elapsed().as_millis();
        tracing::info!(
            networks = r.networks,
            endpoints = r.endpoints,
            removed = r.removed.len(),
            recreated = r.recreated.len(),
            released_leases = r.released_leases,
            ms = r.millis as u64,
            "reconciled"
        );
        Ok(r)
    }

    /// Whether a link with a `netd:` alias inside `sb`'s namespace is one of its macvlan
    /// endpoints, under the name the store has for it.
    fn macvlan_link_is_known(&self, sb: &crate::model::Sandbox, name: &str, alias: &str) -> bool {
        match parse_alias(alias) {
            Some(AliasOwner::Endpoint { sandbox, network }) => {
                sandbox == sb.name
                    && self.networks.get(&network).is_some_and(|n| n.is_macvlan())
                    && sb.endpoint(&network).is_some_and(|e| e.ifname == name)
            }
            _ => false,
        }
    }
}
