//! The agent's side of encrypted overlay networks in IPsec mode: keeps the node's SAs,
//! policies and fail-closed rules in line with the store's key ring and nodes
//! (`ipsec.rs` decides, this reads the store, applies through `kernel::xfrm` and
//! nftables, acknowledges ring versions, promotes a pending key and rotates on a timer),
//! and answers `netctl cluster rotate-keys` and the `encryption` part of an inspect.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::agent::now;
use super::ipsec::{self, Encryption, KeyRing, Op, Peer, RingAck, Wanted};
use super::{Agent, ClusterError, ClusterStore, NetworkRecord};
use crate::kernel::xfrm::{self, Sa, Xfrm, KEY_LEN};

/// Every this many syncs what the kernel holds is read again instead of trusted from
/// memory (an operator's `ip xfrm state flush` heals within it).
const REREAD_EVERY: u32 = 15;
/// How long `rotate-keys` waits for every node to take the new key.
pub(super) const ROTATE_WAIT: Duration = Duration::from_secs(60);

#[derive(Default)]
pub(super) struct IpsecState {
    /// What the kernel holds (`None`: unknown, read it).
    applied: Option<Wanted>,
    /// The VNIs the nftables table was last written for (`None`: not written yet).
    vnis: Option<BTreeSet<u32>>,
    /// The ring version this node acknowledged, and under which lease.
    acked: Option<(u64, u64)>,
    /// ESP works here (probed once, at the first encrypted network).
    esp: Option<Result<(), String>>,
    syncs: u32,
    /// The ring last applied (for inspect).
    ring: Option<KeyRing>,
}

/// Which half of the changes a sync applies: additions before the FDB entries are
/// written, everything (the removals) after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Half {
    Add,
    All,
}

/// The `encryption` part of `netctl network inspect` for an encrypted overlay network.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EncryptionView {
    pub mode: String,
    /// The epoch of the key that sends.
    pub key_epoch: u32,
    /// Epochs of the keys accepted (the ring), oldest first.
    pub keys: Vec<u32>,
    /// A rotation is waiting for every node to accept the newest key.
    pub rotating: bool,
    /// WireGuard: this node's public key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<String>,
    pub peers: Vec<PeerView>,
}

/// What `netctl cluster rotate-keys` did, per mode the cluster uses.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Rotated {
    pub ipsec: Option<KeyRing>,
    /// The new key epoch and every node's key for it.
    pub wireguard: Option<(u64, Vec<super::wireguard::WgRecord>)>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerView {
    pub node: String,
    pub addr: Ipv4Addr,
    /// Both directions have an SA of the primary key and the policy is in place.
    pub up: bool,
    pub spi_out: String,
    pub bytes_out: u64,
    pub bytes_in: u64,
}

async fn kernel<T: Send + 'static>(
    f: impl FnOnce(&mut Xfrm) -> Result<T, crate::kernel::KernelError> + Send + 'static,
) -> Result<T, ClusterError> {
    super::blocking("xfrm", move || {
        let mut x = Xfrm::open()?;
        f(&mut x)
    })
    .await
}

/// The kernel's netd SAs and policies as a `Wanted` (keys unknown: zeros; `diff` only
/// compares destinations and SPIs).
fn held(local: Ipv4Addr, sas: Vec<xfrm::SaState>, policies: Vec<xfrm::Policy>) -> Wanted {
    let mut w = Wanted::default();
    for s in sas {
        let sa = Sa {
            src: s.src,
            dst: s.dst,
            spi: s.spi,
            key: [0; KEY_LEN],
        };
        if s.dst == local {
            w.inbound.insert(sa);
        } else {
            w.outbound.insert(sa);
        }
    }
    w.policies = policies.into_iter().filter(|p| p.src == local).collect();
    w
}

/// `have` after the additions of `diff(have, want)`: both, so a second diff only removes.
fn with_additions(have: &Wanted, want: &Wanted) -> Wanted {
    let mut h = have.clone();
    h.inbound.extend(want.inbound.iter().cloned());
    h.outbound.extend(want.outbound.iter().cloned());
    h.policies.extend(want.policies.iter().copied());
    h
}

impl<S: ClusterStore> Agent<S> {
    /// Brings the node's IPsec state in line with the store: the fail-closed rules for
    /// every encrypted VNI, SAs and policies towards every other node while any network
    /// of `nets` is encrypted (none otherwise: everything netd made goes). `Half::Add`
    /// applies only additions. Errors leave the next sync to read the kernel again.
    pub(super) async fn sync_ipsec(&self, nets: &[NetworkRecord], half: Half) -> Result<(), ClusterError> {
        let vnis: BTreeSet<u32> = nets
            .iter()
            .filter(|n| n.encrypted == Some(Encryption::Ipsec))
            .map(|n| n.vni)
            .collect();
        let mut st = self.ipsec.lock().await;
        if !vnis.is_empty() {
            if st.esp.is_none() {
                let r = tokio::task::spawn_blocking(xfrm::probe_esp)
                    .await
                    .map_err(|e| ClusterError::Invalid(format!("xfrm task panicked: {e}")))?;
                st.esp = Some(r.map_err(|e| e.to_string()));
            }
            if let Some(Err(why)) = &st.esp {
                return Err(ClusterError::Invalid(format!(
                    "encrypted overlay networks need IPsec ESP with {} in the kernel, and this one cannot ({why}); use -o encrypted=wireguard, or a kernel with esp4",
                    xfrm::AEAD_ALG
                )));
            }
        }
        // The rules first: they exist before any SA, policy or VXLAN device they guard.
        if st.vnis.as_ref() != Some(&vnis) {
            self.set_rules(ipsec::nft_batch(&vnis, self.cfg.data_port))
                .await?;
            tracing::info!(table = ipsec::TABLE, vnis = ?vnis, "cluster: IPsec fail-closed rules set");
            st.vnis = Some(vnis.clone());
        }
        let (ring, nodes) = if vnis.is_empty() {
            (None, Vec::new())
        } else {
            (Some(self.ensure_ring().await?), self.store.nodes().await?)
        };
        let local = self.cfg.advertise;
        let want = match &ring {
            Some(r) => {
                let peers: Vec<Peer> = nodes
                    .iter()
                    .filter(|n| n.name != self.cfg.node)
                    .map(|n| Peer {
                        name: n.name.clone(),
                        addr: n.addr,
                    })
                    .collect();
                ipsec::wanted(local, &peers, r, self.cfg.data_port)
            }
            None => Wanted::default(),
        };
        st.syncs = st.syncs.wrapping_add(1);
        let have = match &st.applied {
            Some(h) if st.syncs % REREAD_EVERY != 0 => h.clone(),
            _ => match kernel(|x| Ok((x.sas()?, x.policies()?))).await {
                Ok((sas, pols)) => held(local, sas, pols),
                // No encrypted network and no XFRM in this kernel: nothing of ours to find.
                Err(e) if vnis.is_empty() => {
                    tracing::debug!(error = %e, "cluster: cannot list IPsec state; none to remove");
                    Wanted::default()
                }
                Err(e) => return Err(e),
            },
        };
        let mut ops = ipsec::diff(&have, &want);
        if half == Half::Add {
            ops.retain(|o| matches!(o, Op::AddSa(_) | Op::SetPolicy(_)));
        }
        if !ops.is_empty() {
            let n = ops.len();
            let logged: Vec<String> = ops.iter().map(describe).collect();
            let res = kernel(move |x| {
                for op in &ops {
                    match op {
                        Op::AddSa(sa) => {
                            x.add_sa(sa)?;
                        }
                        Op::DelSa { dst, spi } => x.del_sa(*dst, *spi)?,
                        Op::SetPolicy(p) => x.set_policy(p)?,
                        Op::DelPolicy(p) => x.del_policy(p)?,
                    }
                }
                Ok(())
            })
            .await;
            if let Err(e) = res {
                st.applied = None;
                return Err(e);
            }
            for l in logged {
                tracing::info!(change = %l, "cluster: IPsec");
            }
            tracing::debug!(changes = n, "cluster: IPsec state updated");
        }
        st.applied = Some(match half {
            Half::Add => with_additions(&have, &want),
            Half::All => want,
        });
        let Some(ring) = ring else {
            st.ring = None;
            return Ok(());
        };
        if half == Half::All {
            self.after_apply(&mut st, &ring, &nodes).await?;
        }
        st.ring = Some(ring);
        Ok(())
    }

    /// Runs an encryption mode's rule batch (`ipsec::guard_batch`) in the node's namespace.
    pub(super) async fn set_rules(&self, batch: String) -> Result<(), ClusterError> {
        let nft = self.nft()?;
        super::blocking("nft", move || nft.run(&batch).map(drop))
            .await
            .map_err(|e| ClusterError::Invalid(format!("encryption rules: {e}")))
    }

    /// Acknowledges the ring applied, promotes a pending key every node has, and starts
    /// a rotation when one is due.
    async fn after_apply(
        &self,
        st: &mut IpsecState,
        ring: &KeyRing,
        nodes: &[super::NodeRecord],
    ) -> Result<(), ClusterError> {
        let lease = self.store.lease_epoch();
        if st.acked != Some((ring.version, lease)) {
            self.store
                .put_ipsec_ack(&RingAck {
                    node: self.cfg.node.clone(),
                    version: ring.version,
                })
                .await?;
            st.acked = Some((ring.version, lease));
        }
        let names: BTreeSet<String> = nodes.iter().map(|n| n.name.clone()).collect();
        if ring.pending() {
            let acks = self.store.ipsec_acks().await?;
            if let Some(next) = ring.promote(&names, &acks) {
                if self.store.replace_ipsec_ring(Some(ring), &next).await? {
                    tracing::info!(epoch = next.primary, keys = ?next.keys.iter().map(|k| k.epoch).collect::<Vec<_>>(), "cluster: IPsec key promoted: every node accepts it, it sends now");
                }
                return Ok(());
            }
        } else {
            // A node that left still knows the keys: new ones, as on the timer.
            let left = ring.left(&names);
            if !left.is_empty() || ring.due(now(), self.cfg.key_rotation_s) {
                if let Some(next) = ring.begin_rotation(now(), &names) {
                    if self.store.replace_ipsec_ring(Some(ring), &next).await? {
                        let why = if left.is_empty() {
                            "timer"
                        } else {
                            "a node that held the keys left"
                        };
                        tracing::info!(
                            epoch = next.newest(),
                            ?left,
                            "cluster: IPsec key rotation started ({why})"
                        );
                    }
                    return Ok(());
                }
            }
        }
        // Nodes that joined can read the newest key now: they hold it.
        if let Some(next) = ring.with_holders(&names) {
            self.store.replace_ipsec_ring(Some(ring), &next).await?;
        }
        Ok(())
    }

    /// The ring, made now (one compare-and-set) if the cluster has none yet.
    async fn ensure_ring(&self) -> Result<KeyRing, ClusterError> {
        if let Some(r) = self.store.ipsec_ring().await? {
            return Ok(r);
        }
        let first = KeyRing::first(now());
        if self.store.replace_ipsec_ring(None, &first).await? {
            tracing::info!("cluster: IPsec key ring created (epoch 1)");
            return Ok(first);
        }
        self.store
            .ipsec_ring()
            .await?
            .ok_or_else(|| ClusterError::Invalid("the IPsec key ring vanished while being made".into()))
    }

    /// `netctl cluster rotate-keys`: new keys in every mode the cluster uses (the IPsec
    /// ring, the WireGuard key epoch), returning once they are in use everywhere.
    pub async fn rotate_keys(&self) -> Result<Rotated, ClusterError> {
        let has_ring = self.store.ipsec_ring().await?.is_some();
        let has_wg = !self.store.wireguards().await?.is_empty();
        if !has_ring && !has_wg {
            return Err(ClusterError::NotFound(
                "no keys to rotate: the cluster has no encrypted overlay network".into(),
            ));
        }
        let ipsec = match has_ring {
            true => Some(self.rotate_ipsec().await?),
            false => None,
        };
        let wireguard = match has_wg {
            true => Some(self.rotate_wireguard().await?),
            false => None,
        };
        Ok(Rotated { ipsec, wireguard })
    }

    /// A new key joins the IPsec ring, and this returns once it is primary (every node
    /// accepted it). One rotation at a time.
    async fn rotate_ipsec(&self) -> Result<KeyRing, ClusterError> {
        let ring = self.store.ipsec_ring().await?.ok_or_else(|| {
            ClusterError::NotFound("no IPsec keys yet: the cluster has no encrypted overlay network".into())
        })?;
        let target = match ring.begin_rotation(now(), &self.node_names().await?) {
            Some(next) => {
                if !self.store.replace_ipsec_ring(Some(&ring), &next).await? {
                    return Err(ClusterError::Conflict(
                        "the key ring changed meanwhile (another rotation?); try again".into(),
                    ));
                }
                tracing::info!(
                    epoch = next.newest(),
                    "cluster: IPsec key rotation started (asked)"
                );
                next.newest()
            }
            None => ring.newest(), // One is under way: wait for it.
        };
        let deadline = Instant::now() + ROTATE_WAIT;
        loop {
            self.pass().await?;
            let r = self.store.ipsec_ring().await?;
            if let Some(r) = r.filter(|r| r.primary >= target) {
                return Ok(r);
            }
            if Instant::now() > deadline {
                let acks = self.store.ipsec_acks().await?;
                let nodes = self.store.nodes().await?;
                let want = self.store.ipsec_ring().await?.map(|r| r.version).unwrap_or(0);
                let behind: Vec<String> = nodes
                    .iter()
                    .filter(|n| !acks.iter().any(|a| a.node == n.name && a.version >= want))
                    .map(|n| n.name.clone())
                    .collect();
                return Err(ClusterError::Conflict(format!(
                    "key {target} is not primary after {} s: nodes {} have not accepted it yet; it becomes primary when they do",
                    ROTATE_WAIT.as_secs(),
                    behind.join(", ")
                )));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The encryption state of network `rec` as this node sees it.
    pub async fn encryption_view(&self, rec: &NetworkRecord) -> Result<Option<EncryptionView>, ClusterError> {
        let Some(mode) = rec.encrypted else {
            return Ok(None);
        };
        if mode == Encryption::Wireguard {
            let (epoch, public_key, peers) = self.wireguard_view().await?;
            return Ok(Some(EncryptionView {
                mode: mode.as_str().into(),
                key_epoch: u32::try_from(epoch).unwrap_or(u32::MAX),
                keys: Vec::new(),
                rotating: false,
                public_key,
                peers,
            }));
        }
        let ring = self.store.ipsec_ring().await?;
        let nodes = self.store.nodes().await?;
        let local = self.cfg.advertise;
        let (sas, pols) = kernel(|x| Ok((x.sas()?, x.policies()?)))
            .await
            .unwrap_or_default();
        let (epoch, keys, rotating) = match &ring {
            Some(r) => (r.primary, r.keys.iter().map(|k| k.epoch).collect(), r.pending()),
            None => (0, Vec::new(), false),
        };
        let peers = nodes
            .iter()
            .filter(|n| n.name != self.cfg.node)
            .map(|n| {
                let (so, si) = (ipsec::spi(local, n.addr, epoch), ipsec::spi(n.addr, local, epoch));
                let out = sas.iter().find(|s| s.dst == n.addr && s.spi == so);
                let inb = sas.iter().find(|s| s.dst == local && s.spi == si);
                let pol = pols.iter().any(|p| p.src == local && p.dst == n.addr);
                PeerView {
                    node: n.name.clone(),
                    addr: n.addr,
                    up: out.is_some() && inb.is_some() && pol,
                    spi_out: format!("{so:#010x}"),
                    bytes_out: out.map(|s| s.bytes).unwrap_or(0),
                    // Every key's inbound SA from this peer.
                    bytes_in: sas
                        .iter()
                        .filter(|s| s.dst == local && s.src == n.addr)
                        .map(|s| s.bytes)
                        .sum(),
                }
            })
            .collect();
        Ok(Some(EncryptionView {
            mode: mode.as_str().into(),
            key_epoch: epoch,
            keys,
            rotating,
            public_key: None,
            peers,
        }))
    }
}

fn describe(op: &Op) -> String {
    match op {
        Op::AddSa(sa) => format!("add SA {} -> {} spi {:#010x}", sa.src, sa.dst, sa.spi),
        Op::DelSa { dst, spi } => format!("delete SA to {dst} spi {spi:#010x}"),
        Op::SetPolicy(p) => format!("set policy {} -> {} udp dport {}", p.src, p.dst, p.dport),
        Op::DelPolicy(p) => format!("delete policy {} -> {} udp dport {}", p.src, p.dst, p.dport),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_the_kernel_holds_splits_by_direction() {
        let local: Ipv4Addr = "10.9.0.1".parse().unwrap();
        let sa = |src: &str, dst: &str, spi| xfrm::SaState {
            src: src.parse().unwrap(),
            dst: dst.parse().unwrap(),
            spi,
            bytes: 0,
            packets: 0,
        };
        let w = held(
            local,
            vec![sa("10.9.0.2", "10.9.0.1", 7), sa("10.9.0.1", "10.9.0.2", 8)],
            vec![],
        );
        assert_eq!((w.inbound.len(), w.outbound.len()), (1, 1));
        let want = Wanted::default();
        let h = with_additions(&w, &want);
        assert_eq!(ipsec::diff(&h, &want).len(), 2);
    }
}
