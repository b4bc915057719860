//! Block affinity (Calico's IPAM idea): an overlay subnet is cut into blocks, a node
//! claims one with a single compare-and-set on the block's key, and then allocates
//! addresses from it locally (the network's pool gets the block as its `ip_range`). So
//! no store write per address, and no address twice: a block has one owner, and the
//! store refuses a second claim.
//!
//! Pure: which block a node holds or should try next. The store does the claim.

use std::collections::BTreeSet;

use ipnetwork::Ipv4Network;

use super::BlockRecord;

/// Blocks are /26 (64 addresses), or the whole subnet when it is smaller.
pub const BLOCK_PREFIX: u8 = 26;

pub fn block_prefix(subnet: Ipv4Network) -> u8 {
    subnet.prefix().max(BLOCK_PREFIX)
}

/// Every block of `subnet`, in address order.
pub fn blocks_of(subnet: Ipv4Network) -> impl Iterator<Item = Ipv4Network> {
    let p = block_prefix(subnet);
    let size: u64 = 1 << (32 - u32::from(p));
    let count: u64 = 1 << (u32::from(p) - u32::from(subnet.prefix()));
    let base = u64::from(u32::from(subnet.network()));
    (0..count).filter_map(move |i| {
        let ip = u32::try_from(base + i * size).ok()?;
        Ipv4Network::new(ip.into(), p).ok()
    })
}

/// The block `node` holds already on the network (a restart keeps its block).
pub fn held_by<'a>(node: &str, claims: &'a [BlockRecord]) -> Option<&'a BlockRecord> {
    claims.iter().find(|c| c.node == node)
}

/// The first block nobody has claimed, to try next.
pub fn next_free(subnet: Ipv4Network, claims: &[BlockRecord]) -> Option<Ipv4Network> {
    let taken: BTreeSet<Ipv4Network> = claims.iter().map(|c| c.block).collect();
    blocks_of(subnet).find(|b| !taken.contains(b))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::{Arc, Mutex};

    use super::*;

    fn rec(b: &str, node: &str) -> BlockRecord {
        BlockRecord {
            network: "ov".into(),
            block: b.parse().unwrap(),
            node: node.into(),
        }
    }

    #[test]
    fn blocks_cover_the_subnet_without_overlap() {
        let s: Ipv4Network = "10.20.0.0/24".parse().unwrap();
        let b: Vec<String> = blocks_of(s).map(|b| b.to_string()).collect();
        assert_eq!(
            b,
            [
                "10.20.0.0/26",
                "10.20.0.64/26",
                "10.20.0.128/26",
                "10.20.0.192/26"
            ]
        );
        let small: Ipv4Network = "10.30.0.0/28".parse().unwrap();
        assert_eq!(blocks_of(small).collect::<Vec<_>>(), vec![small]);
        assert_eq!(blocks_of("10.0.0.0/16".parse().unwrap()).count(), 1024);
    }

    #[test]
    fn a_node_keeps_its_block_and_others_get_the_next_free_one() {
        let s: Ipv4Network = "10.20.0.0/24".parse().unwrap();
        let claims = vec![rec("10.20.0.0/26", "h1"), rec("10.20.0.128/26", "h3")];
        assert_eq!(
            held_by("h3", &claims).map(|c| c.block.to_string()),
            Some("10.20.0.128/26".into())
        );
        assert_eq!(held_by("h2", &claims), None);
        assert_eq!(
            next_free(s, &claims).map(|b| b.to_string()),
            Some("10.20.0.64/26".into())
        );
        let full: Vec<BlockRecord> = blocks_of(s).map(|b| rec(&b.to_string(), "x")).collect();
        assert_eq!(next_free(s, &full), None);
    }

    /// Nodes racing for blocks through a compare-and-set store (the etcd transaction's
    /// semantics: create only if absent) each end with a block of their own.
    #[test]
    fn concurrent_claims_through_compare_and_set_never_share_a_block() {
        let s: Ipv4Network = "10.20.0.0/22".parse().unwrap();
        let store: Arc<Mutex<BTreeMap<Ipv4Network, String>>> = Arc::default();
        let nodes: Vec<String> = (0..12).map(|i| format!("h{i}")).collect();
        let threads: Vec<_> = nodes
            .iter()
            .cloned()
            .map(|node| {
                let store = Arc::clone(&store);
                std::thread::spawn(move || loop {
                    // Read (a stale view is fine), then claim; retry on a lost race.
                    let claims: Vec<BlockRecord> = store
                        .lock()
                        .unwrap()
                        .iter()
                        .map(|(b, n)| rec(&b.to_string(), n))
                        .collect();
                    if let Some(mine) = held_by(&node, &claims) {
                        return mine.block;
                    }
                    let b = next_free(s, &claims).expect("subnet has room");
                    std::thread::yield_now();
                    let mut st = store.lock().unwrap();
                    st.entry(b).or_insert_with(|| node.clone());
                })
            })
            .collect();
        let got: Vec<Ipv4Network> = threads.into_iter().map(|t| t.join().unwrap()).collect();
        let distinct: BTreeSet<_> = got.iter().collect();
        assert_eq!(distinct.len(), nodes.len(), "{got:?}");
        assert_eq!(store.lock().unwrap().len(), nodes.len());
    }
}
