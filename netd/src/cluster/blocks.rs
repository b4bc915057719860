//! Block affinity (Calico's IPAM idea): an overlay subnet is cut into blocks, a node
//! claims one with a single compare-and-set on the block's key, and then allocates
//! addresses from it locally (the network's pool gets the block as its `ip_range`). So
//! no store write per address, and no address twice: a block has one owner, and the
//! store refuses a second claim.
//!
//! A node may hold several blocks of a network: when the one its pool allocates from is
//! full, it moves the pool's range to another block it holds that has room, or claims
//! the next free one (`next_block`). Leases in the block it left stay where they are.
//!
//! Pure: which block a node holds or should try next. The store does the claim.

use std::collections::BTreeSet;

use ipnetwork::Ipv4Network;

use super::BlockRecord;
use crate::ipam::Pool;

/// Blocks are /26 (64 addresses) unless the network says otherwise
/// (`-o block_prefix=N`), or the whole subnet when it is smaller.
pub const BLOCK_PREFIX: u8 = 26;

pub fn block_prefix(subnet: Ipv4Network, asked: Option<u8>) -> u8 {
    subnet.prefix().max(asked.unwrap_or(BLOCK_PREFIX))
}

/// Every block of `subnet` (blocks of `/prefix`), in address order.
pub fn blocks_of(subnet: Ipv4Network, prefix: u8) -> impl Iterator<Item = Ipv4Network> {
    let p = subnet.prefix().max(prefix);
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
pub fn next_free(subnet: Ipv4Network, prefix: u8, claims: &[BlockRecord]) -> Option<Ipv4Network> {
    let taken: BTreeSet<Ipv4Network> = claims.iter().map(|c| c.block).collect();
    blocks_of(subnet, prefix).find(|b| !taken.contains(b))
}

/// What a node's pool needs before `want` more dynamic addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextBlock {
    /// The current range has room enough.
    Room,
    /// Move the range to this block, which the node holds and which has room.
    Switch(Ipv4Network),
    /// Claim this free block, then move the range to it.
    Claim(Ipv4Network),
    /// No held block has room and every block is claimed.
    Full,
}

/// Where `node`'s next addresses on the network of `pool` come from (see the module doc).
pub fn next_block(pool: &Pool, want: usize, node: &str, prefix: u8, claims: &[BlockRecord]) -> NextBlock {
    let free_in = |b: Option<Ipv4Network>| {
        let mut p = pool.clone();
        p.ip_range = b.map(Into::into);
        p.free_count()
    };
    let current = match pool.ip_range {
        Some(ipnetwork::IpNetwork::V4(r)) => Some(r),
        _ => None,
    };
    if free_in(current) >= want as u128 {
        return NextBlock::Room;
    }
    if let Some(b) = claims
        .iter()
        .filter(|c| c.node == node && Some(c.block) != current)
        .map(|c| c.block)
        .find(|b| free_in(Some(*b)) > 0)
    {
        return NextBlock::Switch(b);
    }
    let ipnetwork::IpNetwork::V4(subnet) = pool.subnet else {
        return NextBlock::Full;
    };
    match next_free(subnet, prefix, claims) {
        Some(b) => NextBlock::Claim(b),
        None => NextBlock::Full,
    }
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
        let b: Vec<String> = blocks_of(s, BLOCK_PREFIX).map(|b| b.to_string()).collect();
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
        assert_eq!(blocks_of(small, BLOCK_PREFIX).collect::<Vec<_>>(), vec![small]);
        assert_eq!(
            blocks_of("10.0.0.0/16".parse().unwrap(), BLOCK_PREFIX).count(),
            1024
        );
        assert_eq!(blocks_of(s, 28).count(), 16);
        assert_eq!(block_prefix(s, Some(28)), 28);
        assert_eq!(block_prefix(small, Some(26)), 28);
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
            next_free(s, BLOCK_PREFIX, &claims).map(|b| b.to_string()),
            Some("10.20.0.64/26".into())
        );
        let full: Vec<BlockRecord> = blocks_of(s, BLOCK_PREFIX)
            .map(|b| rec(&b.to_string(), "x"))
            .collect();
        assert_eq!(next_free(s, BLOCK_PREFIX, &full), None);
    }

    /// A /28 block fills: the node claims the next free one; a block it holds with room
    /// (an address freed there) is taken before a new claim; nothing left is `Full`.
    #[test]
    fn a_full_block_moves_the_pool_to_a_held_or_a_new_block() {
        let n = |s: &str| -> ipnetwork::IpNetwork { s.parse().unwrap() };
        let mut pool = Pool {
            network: "ov".into(),
            subnet: n("10.20.0.0/26"),
            gateway: "10.20.0.1".parse().unwrap(),
            ip_range: Some(n("10.20.0.0/28")),
            leases: BTreeMap::new(),
            cursor: None,
        };
        let mut claims = vec![rec("10.20.0.0/28", "h1"), rec("10.20.0.16/28", "h2")];
        assert_eq!(next_block(&pool, 1, "h1", 28, &claims), NextBlock::Room);
        // .0 is the network, .1 the gateway: 14 addresses fill the first block.
        for i in 2..16u8 {
            pool.allocate(&format!("s{i}"), None).unwrap();
        }
        assert_eq!(pool.free_count(), 0);
        let want: Ipv4Network = "10.20.0.32/28".parse().unwrap();
        assert_eq!(next_block(&pool, 1, "h1", 28, &claims), NextBlock::Claim(want));
        claims.push(rec("10.20.0.32/28", "h1"));
        pool.ip_range = Some(want.into());
        for i in 0..16u8 {
            pool.allocate(&format!("t{i}"), None).unwrap();
        }
        // An address of the first block freed: it is used again before a new claim.
        pool.release("10.20.0.5".parse().unwrap());
        let first: Ipv4Network = "10.20.0.0/28".parse().unwrap();
        assert_eq!(next_block(&pool, 1, "h1", 28, &claims), NextBlock::Switch(first));
        pool.allocate("u", Some("10.20.0.5".parse().unwrap())).unwrap();
        assert_eq!(
            next_block(&pool, 1, "h1", 28, &claims),
            NextBlock::Claim("10.20.0.48/28".parse().unwrap())
        );
        claims.push(rec("10.20.0.48/28", "h3"));
        assert_eq!(next_block(&pool, 1, "h1", 28, &claims), NextBlock::Full);
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
                    let b = next_free(s, BLOCK_PREFIX, &claims).expect("subnet has room");
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
