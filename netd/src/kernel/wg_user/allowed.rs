//! Cryptokey routing: which peer an IPv4 address belongs to, by longest prefix match
//! over the peers' allowed IPs. Sending looks up the destination; receiving checks that
//! the decrypted packet's source maps back to the peer that sent it.
//!
//! One hash map per prefix length in use, searched longest first: at most 33 probes,
//! independent of the number of peers and without a trie's pointer chasing.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use ipnetwork::Ipv4Network;

#[derive(Debug, Default, Clone)]
pub struct AllowedIps {
    /// (prefix length, masked network -> peer slot), longest prefix first.
    by_len: Vec<(u8, HashMap<u32, usize>)>,
}

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl AllowedIps {
    /// Routes `net` to `slot`; a network already present moves to the new slot (wg does
    /// the same when two peers claim one prefix: the last one wins).
    pub fn insert(&mut self, net: Ipv4Network, slot: usize) {
        let len = net.prefix();
        let key = u32::from(net.ip()) & mask(len);
        let i = match self.by_len.binary_search_by(|(l, _)| len.cmp(l)) {
            Ok(i) => i,
            Err(i) => {
                self.by_len.insert(i, (len, HashMap::new()));
                i
            }
        };
        self.by_len[i].1.insert(key, slot);
    }

    /// The slot of the longest prefix holding `ip`.
    pub fn lookup(&self, ip: Ipv4Addr) -> Option<usize> {
        let ip = u32::from(ip);
        self.by_len
            .iter()
            .find_map(|(len, m)| m.get(&(ip & mask(*len))).copied())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Network {
        s.parse().unwrap()
    }

    #[test]
    fn longest_prefix_wins() {
        let mut t = AllowedIps::default();
        t.insert(net("0.0.0.0/0"), 0);
        t.insert(net("10.0.0.0/8"), 1);
        t.insert(net("10.1.0.0/16"), 2);
        t.insert(net("10.1.2.3/32"), 3);
        assert_eq!(t.lookup("192.168.1.1".parse().unwrap()), Some(0));
        assert_eq!(t.lookup("10.9.9.9".parse().unwrap()), Some(1));
        assert_eq!(t.lookup("10.1.9.9".parse().unwrap()), Some(2));
        assert_eq!(t.lookup("10.1.2.3".parse().unwrap()), Some(3));
    }

    #[test]
    fn host_bits_are_ignored_and_misses_are_none() {
        let mut t = AllowedIps::default();
        t.insert(net("10.1.2.77/24"), 5);
        assert_eq!(t.lookup("10.1.2.1".parse().unwrap()), Some(5));
        assert_eq!(t.lookup("10.1.3.1".parse().unwrap()), None);
    }
}
