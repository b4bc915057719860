//! Encrypted overlay networks in WireGuard mode (`-o encrypted=wireguard`).
//!
//! Each node runs one WireGuard link, `netdwg0` (userspace, boringtun on a TUN device:
//! `kernel::wg_user`), listening on `WG_PORT`; its public key and port are published in
//! the store (`/netd/v1/wireguard/<node>`, under the node's lease) and every other node
//! is a peer whose allowed IP is its underlay address. The VXLAN devices do not change:
//! nftables marks the VXLAN packets of WireGuard networks (by VNI) as they leave, a rule
//! sends marked packets to table `WG_TABLE`, which routes each peer's underlay address
//! into `netdwg0`; WireGuard's own UDP is unmarked and keeps the main table.
//!
//! **Fail closed**, in table `ip netd-wg`: VXLAN of such a VNI that is about to leave
//! through any other link is dropped (`oifname != netdwg0`), and one that arrived through
//! any other link (not decrypted by WireGuard) is dropped before the VXLAN socket.
//!
//! The private key lives in the state directory (`wireguard.key`, mode 0600), so a
//! restart keeps the node's identity.
//!
//! **Key rotation.** The cluster holds one key epoch (`WgRotation`, at
//! `/netd/v1/wireguard-rotation`), raised by `netctl cluster rotate-keys` and by the
//! first node whose timer (`--key-rotation`) finds it due. A node whose key answers to
//! an older epoch makes a new key, writes it to its key file, switches its link to it
//! and only then publishes it. The overlap window is the old key's sessions: the link
//! stops sending on them at the switch (the next packets wait, queued, for a handshake
//! under the new key) but keeps receiving on them, so what the peers send under the old
//! key arrives until each of them, seeing the new record, moves the node's peer entry to
//! the new key (which starts the handshake at once: keepalive). Nothing is sent under a
//! key the other side does not hold, and the queue covers the moment the peers take to
//! follow. Nodes take turns, in name order, each `SETTLE` after the one before it
//! published: a peer entry replaced while its own first packets wait for a handshake
//! would lose them (the kernel drops a removed peer's queue), and two nodes switching
//! at once would each queue packets for the other's old key.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::agent::now;
use super::encrypt::PeerView;
use super::ipsec::Encryption;
use super::{blocking, Agent, ClusterError, ClusterStore, NetworkRecord};
use crate::kernel::wg_kernel::KernelWg;
use crate::kernel::wg_user::{self, PeerStatus, UserWg, WgConfig, WgPeer};

/// The node's link: the kernel's WireGuard where the kernel has it (it outlives the
/// daemon), else boringtun on a TUN device (it goes with the daemon).
enum WgDev {
    Kernel(KernelWg),
    User(UserWg),
}

impl WgDev {
    fn public_key(&self) -> [u8; 32] {
        match self {
            WgDev::Kernel(k) => k.public_key(),
            WgDev::User(u) => u.public_key(),
        }
    }
    fn set_peers(&self, peers: &[WgPeer]) -> Result<(), crate::kernel::KernelError> {
        match self {
            WgDev::Kernel(k) => k.set_peers(peers),
            WgDev::User(u) => u.set_peers(peers),
        }
    }
    /// Peers the link keeps for a while after they left the set are due to go.
    fn retired_due(&self) -> bool {
        match self {
            WgDev::Kernel(k) => k.retired_due(),
            WgDev::User(_) => false,
        }
    }
    fn peers(&self) -> Vec<PeerStatus> {
        match self {
            WgDev::Kernel(k) => k.peers().unwrap_or_default(),
            WgDev::User(u) => u.peers(),
        }
    }
    fn set_private_key(&mut self, key: &[u8; 32]) -> Result<(), crate::kernel::KernelError> {
        match self {
            WgDev::Kernel(k) => k.set_private_key(key),
            WgDev::User(u) => {
                u.set_private_key(key);
                Ok(())
            }
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            WgDev::Kernel(_) => "kernel",
            WgDev::User(_) => "userspace (boringtun)",
        }
    }
    /// Removes the link (a userspace one goes when its TUN closes).
    fn remove(self) -> Result<(), crate::kernel::KernelError> {
        match self {
            WgDev::Kernel(k) => k.remove(),
            WgDev::User(u) => {
                drop(u);
                Ok(())
            }
        }
    }
}

/// No dash: bridges are `netd-<network>`, so no network name can take it.
pub const WG_LINK: &str = "netdwg0";
pub const WG_PORT: u16 = 51820;
/// The packet mark of VXLAN packets of WireGuard networks.
pub const WG_MARK: u32 = 0x0008_0000;
/// The routing table (and rule priority) that sends marked packets into `WG_LINK`.
pub const WG_TABLE: u32 = 0x6e64;
pub const TABLE: &str = "netd-wg";
/// The address of `WG_LINK` on every node: link-local, routes nothing; it exists because
/// the kernel's reverse-path filter drops what arrives on a link without one.
pub const LINK_ADDR: Ipv4Addr = Ipv4Addr::new(169, 254, 110, 64);

/// A node's WireGuard identity, as the others see it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgRecord {
    pub node: String,
    /// Base64, as `wg` prints it.
    pub public_key: String,
    pub addr: Ipv4Addr,
    pub port: u16,
    /// The cluster key epoch (`WgRotation`) this key was made for.
    #[serde(default)]
    pub epoch: u64,
}

/// The cluster's WireGuard key epoch and when it was raised (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WgRotation {
    pub epoch: u64,
    pub at: u64,
}

impl WgRotation {
    pub fn first(now: u64) -> WgRotation {
        WgRotation { epoch: 1, at: now }
    }
    pub fn next(&self, now: u64) -> WgRotation {
        WgRotation {
            epoch: self.epoch + 1,
            at: now,
        }
    }
    /// A rotation every `every` seconds (0: never on a timer).
    pub fn due(&self, now: u64, every: u64) -> bool {
        every > 0 && now.saturating_sub(self.at) >= every
    }
}

/// How long a node waits, once its turn has come, before it switches to a new key:
/// time for the peers to follow the node before it and finish their handshakes.
pub const SETTLE: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether it is node `me`'s turn to make a key for epoch `target`: every node before it
/// in name order (of the registered nodes with a WireGuard record) has one.
pub fn my_turn(me: &str, recs: &[WgRecord], nodes: &BTreeSet<String>, target: u64) -> bool {
    recs.iter()
        .filter(|r| nodes.contains(&r.node) && r.node.as_str() < me)
        .all(|r| r.epoch >= target)
}

/// Whether a node whose key answers to epoch `held` makes a new key under cluster epoch
/// `cluster`, and the epoch its key answers to after. A node that does not know its
/// key's epoch (`None`: a first start, or its record went with its lease) takes the
/// cluster's as it is and rotates at the next one.
pub fn key_step(held: Option<u64>, cluster: u64) -> (bool, u64) {
    match held {
        Some(h) if h < cluster => (true, cluster),
        Some(h) => (false, h),
        None => (false, cluster),
    }
}

#[derive(Default)]
pub(super) struct WgState {
    dev: Option<WgDev>,
    /// What was published, and under which lease.
    published: Option<(WgRecord, u64)>,
    peers: Option<Vec<WgPeer>>,
    routes: Option<BTreeSet<Ipv4Addr>>,
    vnis: Option<BTreeSet<u32>>,
    /// The cluster key epoch the link's key answers to.
    epoch: Option<u64>,
    /// Since when this node's turn to rotate for an epoch has been seen.
    turn: Option<(u64, std::time::Instant)>,
}

/// The peers node `me` configures: every other registered node that published a key.
pub fn peers_of(me: &str, recs: &[WgRecord], nodes: &BTreeSet<String>) -> Vec<WgPeer> {
    let mut out: Vec<WgPeer> = recs
        .iter()
        .filter(|r| r.node != me && nodes.contains(&r.node))
        .filter_map(|r| {
            Some(WgPeer {
                public_key: wg_user::key_from_base64(&r.public_key)?,
                endpoint: Some(SocketAddrV4::new(r.addr, r.port)),
                allowed_ips: vec![Ipv4Network::new(r.addr, 32).ok()?],
                keepalive: Some(25),
            })
        })
        .collect();
    out.sort_by_key(|p| p.endpoint.map(|e| *e.ip()));
    out
}

/// The fail-closed rules and the mark for WireGuard VNIs `vnis` on data port `port`:
/// leaving or arriving through any link but `WG_LINK` drops.
pub fn nft_batch(vnis: &BTreeSet<u32>, port: u16) -> String {
    let out_drop = format!("oifname != \"{WG_LINK}\"");
    let in_drop = format!("iifname != \"{WG_LINK}\"");
    let g = super::ipsec::Guard {
        table: TABLE,
        what: "wireguard",
        mark: WG_MARK,
        out_drop: &out_drop,
        in_drop: &in_drop,
    };
    super::ipsec::guard_batch(&g, vnis, port)
}

/// The node's private key from `path`, made (0600) when there is none.
fn private_key(path: &Path) -> Result<[u8; 32], ClusterError> {
    match std::fs::read_to_string(path) {
        Ok(t) => wg_user::key_from_base64(t.trim()).ok_or_else(|| key_error(path, "not a base64 key".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let k = wg_user::generate_private_key();
            write_private_key(path, &k)?;
            Ok(k)
        }
        Err(e) => Err(key_error(path, e.to_string())),
    }
}

fn key_error(path: &Path, e: String) -> ClusterError {
    ClusterError::Invalid(format!("WireGuard key {}: {e}", path.display()))
}

/// Writes `key` to `path` (0600) whole or not at all: a new file beside it, synced, then
/// renamed over it.
fn write_private_key(path: &Path, key: &[u8; 32]) -> Result<(), ClusterError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let bad = |e: std::io::Error| key_error(path, e.to_string());
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(bad)?;
    }
    let tmp = path.with_extension("key.new");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .map_err(bad)?;
    writeln!(f, "{}", wg_user::key_to_base64(key)).map_err(bad)?;
    f.sync_all().map_err(bad)?;
    std::fs::rename(&tmp, path).map_err(bad)
}

impl<S: ClusterStore> Agent<S> {
    /// Brings the node's WireGuard side in line with the store: rules for every
    /// WireGuard VNI first, then the link, the published key, the peers and their
    /// routes while any network of `nets` uses WireGuard; none of it otherwise.
    pub(super) async fn sync_wireguard(&self, nets: &[NetworkRecord]) -> Result<(), ClusterError> {
        let vnis: BTreeSet<u32> = nets
            .iter()
            .filter(|n| n.encrypted == Some(Encryption::Wireguard))
            .map(|n| n.vni)
            .collect();
        let mut st = self.wg.lock().await;
        if st.vnis.as_ref() != Some(&vnis) {
            self.set_rules(nft_batch(&vnis, self.cfg.data_port)).await?;
            tracing::info!(table = TABLE, vnis = ?vnis, "cluster: WireGuard fail-closed rules set");
            st.vnis = Some(vnis.clone());
        }
        if vnis.is_empty() {
            return self.wireguard_down(&mut st).await;
        }
        if st.dev.is_none() {
            let key = private_key(&self.cfg.wg_key)?;
            let cfg = WgConfig {
                name: WG_LINK.into(),
                private_key: key,
                listen_port: WG_PORT,
                mtu: (self.mtu + super::VXLAN_OVERHEAD).saturating_sub(super::ipsec::WG_OVERHEAD),
                fwmark: 0,
            };
            let dev = blocking("wireguard", move || {
                let d = if crate::kernel::wg_kernel::available() {
                    WgDev::Kernel(KernelWg::start(
                        &cfg.name,
                        &cfg.private_key,
                        cfg.listen_port,
                        cfg.mtu,
                    )?)
                } else {
                    WgDev::User(UserWg::start(cfg)?)
                };
                // Decrypted packets come in on netdwg0 from the peer's underlay address,
                // whose route is the main table's, through eth0: reverse-path filtering
                // must be loose there, and the kernel drops anything arriving on a link
                // without an address once any filtering is on (`conf/all` may be), so
                // the link gets one that routes nothing.
                crate::kernel::sysctl::write(&format!("net/ipv4/conf/{WG_LINK}/rp_filter"), "2")?;
                let mut nl = crate::kernel::netlink::Netlink::open()?;
                let idx = nl
                    .link_index(WG_LINK)?
                    .ok_or_else(|| crate::kernel::KernelError::Other(format!("{WG_LINK} is gone")))?;
                match nl.add_address(
                    idx,
                    ipnetwork::IpNetwork::V4(
                        Ipv4Network::new(LINK_ADDR, 32)
                            .map_err(|e| crate::kernel::KernelError::Other(e.to_string()))?,
                    ),
                ) {
                    Ok(()) => {}
                    Err(crate::kernel::KernelError::Netlink {
                        errno: Some(nix::errno::Errno::EEXIST),
                        ..
                    }) => {}
                    Err(e) => return Err(e),
                }
                nl.add_fwmark_rule(WG_MARK, WG_MARK, WG_TABLE, WG_TABLE)?;
                Ok(d)
            })
            .await?;
            tracing::info!(link = WG_LINK, kind = dev.kind(), port = WG_PORT, public_key = %wg_user::key_to_base64(&dev.public_key()), "cluster: WireGuard link up");
            st.dev = Some(dev);
            st.peers = None;
            st.routes = None;
        }
        let recs = self.store.wireguards().await?;
        let nodes = self.node_names().await?;
        let cluster = self.wireguard_epoch().await?;
        if st.epoch.is_none() {
            // A restart: the epoch our record (if it outlived us) gives the key we hold.
            let mine = st.dev.as_ref().map(|d| wg_user::key_to_base64(&d.public_key()));
            st.epoch = recs
                .iter()
                .find(|r| r.node == self.cfg.node && Some(&r.public_key) == mine.as_ref())
                .map(|r| r.epoch);
        }
        let (rotate, target) = key_step(st.epoch, cluster.epoch);
        // The turn for `target`: since when this node has seen it (kept while it lasts).
        st.turn = match st.turn {
            _ if !rotate || !my_turn(&self.cfg.node, &recs, &nodes, target) => None,
            Some((e, since)) if e == target => Some((e, since)),
            _ => Some((target, std::time::Instant::now())),
        };
        if st.turn.is_some_and(|(_, since)| since.elapsed() >= SETTLE) {
            self.rotate_own_key(&mut st, target)?;
            st.turn = None;
            st.epoch = Some(target);
        } else if !rotate {
            st.epoch = Some(target);
        }
        // Else not yet: the key stays the one `st.epoch` names.
        let Some(epoch) = st.epoch else {
            return Ok(());
        };
        let Some(public) = st.dev.as_ref().map(WgDev::public_key) else {
            return Ok(());
        };
        let rec = WgRecord {
            node: self.cfg.node.clone(),
            public_key: wg_user::key_to_base64(&public),
            addr: self.cfg.advertise,
            port: WG_PORT,
            epoch,
        };
        let lease = self.store.lease_epoch();
        if st.published.as_ref() != Some(&(rec.clone(), lease)) {
            self.store.put_wireguard(&rec).await?;
            st.published = Some((rec, lease));
        }
        self.apply_peers(&mut st, &recs, &nodes).await
    }

    /// The link's peers and their routes in `WG_TABLE` as `recs` and `nodes` say.
    async fn apply_peers(
        &self,
        st: &mut WgState,
        recs: &[WgRecord],
        nodes: &BTreeSet<String>,
    ) -> Result<(), ClusterError> {
        let want = peers_of(&self.cfg.node, recs, nodes);
        if st.peers.as_ref() != Some(&want) || st.dev.as_ref().is_some_and(WgDev::retired_due) {
            if let Some(dev) = st.dev.as_ref() {
                dev.set_peers(&want)
                    .map_err(|e| ClusterError::Invalid(format!("WireGuard peers: {e}")))?;
            }
            tracing::info!(peers = want.len(), "cluster: WireGuard peers set");
            st.peers = Some(want.clone());
        }
        let addrs: BTreeSet<Ipv4Addr> = want.iter().filter_map(|p| p.endpoint.map(|e| *e.ip())).collect();
        if st.routes.as_ref() != Some(&addrs) {
            let a = addrs.clone();
            blocking("wireguard", move || {
                let mut nl = crate::kernel::netlink::Netlink::open()?;
                let idx = nl
                    .link_index(WG_LINK)?
                    .ok_or_else(|| crate::kernel::KernelError::Other(format!("{WG_LINK} is gone")))?;
                for old in nl.table_routes(WG_TABLE)? {
                    if old.prefix() != 32 || !a.contains(&old.ip()) {
                        nl.del_table_route(old, WG_TABLE)?;
                    }
                }
                for ip in &a {
                    nl.replace_table_route(Ipv4Network::from(*ip), idx, WG_TABLE)?;
                }
                Ok(())
            })
            .await?;
            st.routes = Some(addrs);
        }
        Ok(())
    }

    /// Follows other nodes' keys as soon as their records change (a rotation), without
    /// waiting for a pass: what a node queued for its peers under its new key waits
    /// only this long. Until `shutdown` flips.
    pub(super) async fn follow_wireguard(self: Arc<Self>, mut shutdown: tokio::sync::watch::Receiver<bool>) {
        loop {
            tokio::select! {
                _ = self.store.wireguard_changed() => {}
                _ = shutdown.changed() => return,
            }
            let mut st = self.wg.lock().await;
            if st.dev.is_none() {
                continue;
            }
            let res = async {
                let recs = self.store.wireguards().await?;
                let nodes = self.node_names().await?;
                self.apply_peers(&mut st, &recs, &nodes).await
            }
            .await;
            if let Err(e) = res {
                tracing::warn!(error = %e, "cluster: cannot follow WireGuard keys; the next pass retries");
            }
        }
    }

    /// The names of the registered nodes.
    pub(super) async fn node_names(&self) -> Result<BTreeSet<String>, ClusterError> {
        Ok(self.store.nodes().await?.into_iter().map(|n| n.name).collect())
    }

    /// The cluster's key epoch: made (epoch 1) if there is none, raised here when the
    /// timer finds it due (the first node to see it wins the compare-and-set).
    async fn wireguard_epoch(&self) -> Result<WgRotation, ClusterError> {
        let cur = self.store.wireguard_rotation().await?;
        let want = match &cur {
            None => WgRotation::first(now()),
            Some(r) if r.due(now(), self.cfg.key_rotation_s) => r.next(now()),
            Some(r) => return Ok(r.clone()),
        };
        if self.store.replace_wireguard_rotation(cur.as_ref(), &want).await? {
            if cur.is_some() {
                tracing::info!(
                    epoch = want.epoch,
                    "cluster: WireGuard key rotation started (timer)"
                );
            }
            return Ok(want);
        }
        self.store
            .wireguard_rotation()
            .await?
            .ok_or_else(|| ClusterError::Invalid("the WireGuard key epoch vanished".into()))
    }

    /// A new private key for epoch `epoch`: on disk first (a crash after leaves the link
    /// to take it at the restart), then on the link. The caller publishes it after.
    fn rotate_own_key(&self, st: &mut WgState, epoch: u64) -> Result<(), ClusterError> {
        let Some(dev) = st.dev.as_mut() else {
            return Ok(());
        };
        let old = wg_user::key_to_base64(&dev.public_key());
        let key = wg_user::generate_private_key();
        write_private_key(&self.cfg.wg_key, &key)?;
        dev.set_private_key(&key)
            .map_err(|e| ClusterError::Invalid(format!("WireGuard key: {e}")))?;
        tracing::info!(
            link = WG_LINK,
            epoch,
            old = %old,
            new = %wg_user::key_to_base64(&dev.public_key()),
            "cluster: WireGuard key rotated (the old key's sessions still receive until the peers follow)"
        );
        Ok(())
    }

    /// `netctl cluster rotate-keys` for WireGuard: raises the cluster's key epoch and
    /// returns once every node with a WireGuard link published a key for it.
    pub(super) async fn rotate_wireguard(&self) -> Result<(u64, Vec<WgRecord>), ClusterError> {
        let target = loop {
            let cur = self.wireguard_epoch().await?;
            let next = cur.next(now());
            if self.store.replace_wireguard_rotation(Some(&cur), &next).await? {
                tracing::info!(
                    epoch = next.epoch,
                    "cluster: WireGuard key rotation started (asked)"
                );
                break next.epoch;
            }
        };
        let deadline = std::time::Instant::now() + super::encrypt::ROTATE_WAIT;
        loop {
            self.pass().await?;
            let nodes = self.node_names().await?;
            let recs: Vec<WgRecord> = self
                .store
                .wireguards()
                .await?
                .into_iter()
                .filter(|r| nodes.contains(&r.node))
                .collect();
            let behind: Vec<&str> = recs
                .iter()
                .filter(|r| r.epoch < target)
                .map(|r| r.node.as_str())
                .collect();
            if behind.is_empty() {
                return Ok((target, recs));
            }
            if std::time::Instant::now() > deadline {
                return Err(ClusterError::Conflict(format!(
                    "WireGuard key epoch {target}: nodes {} have not published a new key after {} s; they do at their next pass",
                    behind.join(", "),
                    super::encrypt::ROTATE_WAIT.as_secs()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }

    /// No WireGuard network left: the link, its rule and routes, and the record go.
    async fn wireguard_down(&self, st: &mut WgState) -> Result<(), ClusterError> {
        let had = st.dev.take();
        if had.is_none() && st.published.is_none() && st.routes.as_ref().is_some_and(BTreeSet::is_empty) {
            return Ok(());
        }
        blocking("wireguard", move || {
            if let Some(d) = had {
                d.remove()?;
            }
            let mut nl = crate::kernel::netlink::Netlink::open()?;
            for r in nl.table_routes(WG_TABLE)? {
                nl.del_table_route(r, WG_TABLE)?;
            }
            nl.del_fwmark_rule(WG_MARK, WG_MARK, WG_TABLE, WG_TABLE)
        })
        .await?;
        if st.published.take().is_some() {
            self.store.delete_wireguard(&self.cfg.node).await?;
            tracing::info!(
                link = WG_LINK,
                "cluster: WireGuard link removed (no WireGuard network left)"
            );
        }
        st.peers = None;
        st.routes = Some(BTreeSet::new());
        st.epoch = None;
        Ok(())
    }

    /// This node's key epoch and public key, and per peer node whether it has a session
    /// (a handshake within 3 minutes) and the bytes each way.
    pub(super) async fn wireguard_view(&self) -> Result<(u64, Option<String>, Vec<PeerView>), ClusterError> {
        let st = self.wg.lock().await;
        let Some(dev) = st.dev.as_ref() else {
            return Ok((0, None, Vec::new()));
        };
        let epoch = st.epoch.unwrap_or(0);
        let public = Some(wg_user::key_to_base64(&dev.public_key()));
        let recs: BTreeMap<[u8; 32], WgRecord> = self
            .store
            .wireguards()
            .await?
            .into_iter()
            .filter_map(|r| Some((wg_user::key_from_base64(&r.public_key)?, r)))
            .collect();
        let now = std::time::SystemTime::now();
        let addrs: BTreeSet<Ipv4Addr> = recs.values().map(|r| r.addr).collect();
        let peers = dev
            .peers()
            .into_iter()
            // A node's old key, retired after a rotation (the kernel keeps its entry a
            // few seconds): the node is listed under its current key.
            .filter(|p| {
                recs.contains_key(&p.public_key) || !p.endpoint.is_some_and(|e| addrs.contains(e.ip()))
            })
            .map(|p| {
                // A peer the link has that no record names any more (it is about to go).
                let r = recs.get(&p.public_key).cloned().unwrap_or_else(|| WgRecord {
                    node: "(left)".into(),
                    public_key: wg_user::key_to_base64(&p.public_key),
                    addr: p.endpoint.map_or(Ipv4Addr::UNSPECIFIED, |e| *e.ip()),
                    port: p.endpoint.map_or(0, |e| e.port()),
                    epoch: 0,
                });
                let fresh = p
                    .last_handshake
                    .and_then(|t| now.duration_since(t).ok())
                    .is_some_and(|d| d.as_secs() < 180);
                PeerView {
                    node: r.node,
                    addr: r.addr,
                    up: fresh,
                    spi_out: String::new(),
                    bytes_out: p.tx_bytes,
                    bytes_in: p.rx_bytes,
                }
            })
            .collect();
        Ok((epoch, public, peers))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_other_registered_node_with_a_key_is_a_peer() {
        let k = wg_user::key_to_base64(&wg_user::public_key_of(&[7; 32]));
        let rec = |n: &str, a: &str| WgRecord {
            node: n.into(),
            public_key: k.clone(),
            addr: a.parse().unwrap(),
            port: WG_PORT,
            epoch: 1,
        };
        let recs = vec![
            rec("h1", "10.0.0.1"),
            rec("h2", "10.0.0.2"),
            rec("h3", "10.0.0.3"),
        ];
        let nodes: BTreeSet<String> = ["h1", "h2"].iter().map(|s| s.to_string()).collect();
        let p = peers_of("h1", &recs, &nodes);
        assert_eq!(p.len(), 1, "h3 left the cluster: no peer");
        assert_eq!(
            p[0].allowed_ips,
            vec!["10.0.0.2/32".parse::<Ipv4Network>().unwrap()]
        );
        assert_eq!(p[0].endpoint, Some("10.0.0.2:51820".parse().unwrap()));
    }

    #[test]
    fn nodes_rotate_in_name_order_and_a_newcomer_takes_the_epoch() {
        let rec = |n: &str, epoch: u64| WgRecord {
            node: n.into(),
            public_key: String::new(),
            addr: Ipv4Addr::LOCALHOST,
            port: WG_PORT,
            epoch,
        };
        let nodes: BTreeSet<String> = ["h1", "h2", "h3"].iter().map(|s| s.to_string()).collect();
        // Epoch 2 asked: h1 goes first, h2 after h1 published, h3 after both.
        let recs = vec![rec("h1", 1), rec("h2", 1), rec("h3", 1)];
        assert!(my_turn("h1", &recs, &nodes, 2));
        assert!(!my_turn("h2", &recs, &nodes, 2));
        let recs = vec![rec("h1", 2), rec("h2", 1), rec("h3", 1)];
        assert!(my_turn("h2", &recs, &nodes, 2));
        assert!(!my_turn("h3", &recs, &nodes, 2));
        // A node that left (not registered) holds nobody up.
        let gone: BTreeSet<String> = ["h2", "h3"].iter().map(|s| s.to_string()).collect();
        assert!(my_turn("h2", &[rec("h1", 1), rec("h2", 1)], &gone, 2));
        // key_step: older rotates to the cluster's; same or unknown does not.
        assert_eq!(key_step(Some(1), 3), (true, 3));
        assert_eq!(key_step(Some(3), 3), (false, 3));
        assert_eq!(key_step(None, 3), (false, 3));
        // The timer: due after `every` seconds; 0 never.
        let r = WgRotation::first(100);
        assert!(!r.due(150, 60) && r.due(160, 60) && !r.due(1_000_000, 0));
        assert_eq!(r.next(160), WgRotation { epoch: 2, at: 160 });
    }

    #[test]
    fn a_key_file_is_made_once_and_replaced_whole() {
        let dir = std::env::temp_dir().join(format!("netd-wgkey-{}", std::process::id()));
        let path = dir.join("wireguard.key");
        let k1 = private_key(&path).unwrap();
        assert_eq!(private_key(&path).unwrap(), k1, "read back, not made again");
        let k2 = wg_user::generate_private_key();
        write_private_key(&path, &k2).unwrap();
        assert_eq!(private_key(&path).unwrap(), k2);
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert!(!path.with_extension("key.new").exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn the_rules_keep_wireguard_vnis_on_the_link() {
        let b = nft_batch(&[300u32].into(), 4789);
        assert!(b.contains("udp dport 4789 @th,96,24 0x12c iifname != \"netdwg0\" counter drop"));
        assert!(b.contains("oifname != \"netdwg0\" counter drop"));
        assert!(b.contains("meta mark set meta mark | 0x00080000"));
    }
}
