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

use std::collections::{BTreeMap, BTreeSet};
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::Path;

use ipnetwork::Ipv4Network;
use serde::{Deserialize, Serialize};

use super::encrypt::PeerView;
use super::ipsec::Encryption;
use super::{Agent, ClusterError, ClusterStore, NetworkRecord};
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
    fn peers(&self) -> Vec<PeerStatus> {
        match self {
            WgDev::Kernel(k) => k.peers().unwrap_or_default(),
            WgDev::User(u) => u.peers(),
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
}

#[derive(Default)]
pub(super) struct WgState {
    dev: Option<WgDev>,
    /// What was published, and under which lease.
    published: Option<(WgRecord, u64)>,
    peers: Option<Vec<WgPeer>>,
    routes: Option<BTreeSet<Ipv4Addr>>,
    vnis: Option<BTreeSet<u32>>,
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
    let bad = |e: String| ClusterError::Invalid(format!("WireGuard key {}: {e}", path.display()));
    match std::fs::read_to_string(path) {
        Ok(t) => wg_user::key_from_base64(t.trim()).ok_or_else(|| bad("not a base64 key".into())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            use std::io::Write;
            use std::os::unix::fs::OpenOptionsExt;
            let k = wg_user::generate_private_key();
            if let Some(dir) = path.parent() {
                std::fs::create_dir_all(dir).map_err(|e| bad(e.to_string()))?;
            }
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(path)
                .map_err(|e| bad(e.to_string()))?;
            writeln!(f, "{}", wg_user::key_to_base64(&k)).map_err(|e| bad(e.to_string()))?;
            Ok(k)
        }
        Err(e) => Err(bad(e.to_string())),
    }
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, crate::kernel::KernelError> + Send + 'static,
) -> Result<T, ClusterError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ClusterError::Invalid(format!("wireguard task panicked: {e}")))?
        .map_err(|e| ClusterError::Invalid(e.to_string()))
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
            let dev = blocking(move || {
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
        let Some(public) = st.dev.as_ref().map(WgDev::public_key) else {
            return Ok(());
        };
        let rec = WgRecord {
            node: self.cfg.node.clone(),
            public_key: wg_user::key_to_base64(&public),
            addr: self.cfg.advertise,
            port: WG_PORT,
        };
        let lease = self.store.lease_epoch();
        if st.published.as_ref() != Some(&(rec.clone(), lease)) {
            self.store.put_wireguard(&rec).await?;
            st.published = Some((rec, lease));
        }
        let nodes: BTreeSet<String> = self.store.nodes().await?.into_iter().map(|n| n.name).collect();
        let want = peers_of(&self.cfg.node, &self.store.wireguards().await?, &nodes);
        if st.peers.as_ref() != Some(&want) {
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
            blocking(move || {
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

    /// No WireGuard network left: the link, its rule and routes, and the record go.
    async fn wireguard_down(&self, st: &mut WgState) -> Result<(), ClusterError> {
        let had = st.dev.take();
        if had.is_none() && st.published.is_none() && st.routes.as_ref().is_some_and(BTreeSet::is_empty) {
            return Ok(());
        }
        blocking(move || {
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
        Ok(())
    }

    /// Per peer node: whether it has a session (a handshake within 3 minutes) and the
    /// bytes each way.
    pub(super) async fn wireguard_peers(&self) -> Result<Vec<PeerView>, ClusterError> {
        let st = self.wg.lock().await;
        let Some(dev) = st.dev.as_ref() else {
            return Ok(Vec::new());
        };
        let recs: BTreeMap<[u8; 32], WgRecord> = self
            .store
            .wireguards()
            .await?
            .into_iter()
            .filter_map(|r| Some((wg_user::key_from_base64(&r.public_key)?, r)))
            .collect();
        let now = std::time::SystemTime::now();
        Ok(dev
            .peers()
            .into_iter()
            .map(|p| {
                // A peer the link has that no record names any more (it is about to go).
                let r = recs.get(&p.public_key).cloned().unwrap_or_else(|| WgRecord {
                    node: "(left)".into(),
                    public_key: wg_user::key_to_base64(&p.public_key),
                    addr: p.endpoint.map_or(Ipv4Addr::UNSPECIFIED, |e| *e.ip()),
                    port: p.endpoint.map_or(0, |e| e.port()),
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
            .collect())
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
    fn the_rules_keep_wireguard_vnis_on_the_link() {
        let b = nft_batch(&[300u32].into(), 4789);
        assert!(b.contains("udp dport 4789 @th,96,24 0x12c iifname != \"netdwg0\" counter drop"));
        assert!(b.contains("oifname != \"netdwg0\" counter drop"));
        assert!(b.contains("meta mark set meta mark | 0x00080000"));
    }
}
