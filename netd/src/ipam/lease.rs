//! Address leases inside one pool: static requests, round-robin dynamic allocation and
//! release. Searches walk the lease map (a `BTreeMap`, so in address order) from the
//! cursor instead of probing addresses one by one, which keeps a /64 or a nearly full /16
//! cheap: the cost is the number of leased addresses skipped, never the size of the range.

use std::net::IpAddr;

use super::{bounds, from_u128, to_u128, IpamError, Pool};

impl Pool {
    /// Leases an address to `owner`. `want` is a static request: it must lie in the
    /// subnet and be free, but may lie outside `ip_range` (Docker allows this, so users
    /// can keep static addresses clear of the dynamic ones). Without `want`, the next free
    /// address of `ip_range` (or the subnet) after `cursor` is taken, wrapping once.
    pub fn allocate(&mut self, owner: &str, want: Option<IpAddr>) -> Result<IpAddr, IpamError> {
        let addr = match want {
            Some(w) => {
                self.check_static(w)?;
                w
            }
            None => {
                let a = self.next_free().ok_or_else(|| IpamError::Exhausted {
                    range: self.ip_range.unwrap_or(self.subnet),
                    network: self.network.clone(),
                })?;
                // Only dynamic picks move the cursor, like libnetwork: a static address
                // says nothing about where the round-robin should continue.
                self.cursor = Some(a);
                a
            }
        };
        self.leases.insert(addr, owner.to_string());
        Ok(addr)
    }

    /// Frees one address; true if it was leased.
    pub fn release(&mut self, addr: IpAddr) -> bool {
        self.leases.remove(&addr).is_some()
    }

    /// Frees every address leased to `owner` and returns how many there were.
    pub fn release_owner(&mut self, owner: &str) -> usize {
        let before = self.leases.len();
        self.leases.retain(|_, o| o != owner);
        before - self.leases.len()
    }

    /// Who holds `addr`, if anyone.
    pub fn owner_of(&self, addr: IpAddr) -> Option<&str> {
        self.leases.get(&addr).map(String::as_str)
    }

    pub fn prefix_len(&self) -> u8 {
        self.subnet.prefix()
    }

    /// True if `ip` lies in this pool's subnet (leased or not).
    pub fn contains(&self, ip: IpAddr) -> bool {
        ip.is_ipv6() == self.subnet.is_ipv6() && self.subnet.contains(ip)
    }

    /// Addresses still available to dynamic allocation (in `ip_range`, or the subnet),
    /// saturating at `u128::MAX` for a `/0`.
    pub fn free_count(&self) -> u128 {
        let Some((lo, hi)) = self.dynamic_bounds() else {
            return 0;
        };
        let total = (hi - lo).saturating_add(1);
        let reserved = self
            .reserved_points()
            .into_iter()
            .flatten()
            .filter(|r| (lo..=hi).contains(r))
            .count();
        let leased = self.leases.range(self.ip(lo)..=self.ip(hi)).count();
        total
            .saturating_sub(reserved as u128)
            .saturating_sub(leased as u128)
    }

    fn v6(&self) -> bool {
        self.subnet.is_ipv6()
    }

    fn ip(&self, v: u128) -> IpAddr {
        from_u128(v, self.v6())
    }

    /// Network address, IPv4 broadcast and gateway: never leased. The IPv6 network
    /// address is the subnet-router anycast address, so it is kept out too.
    fn reserved_points(&self) -> [Option<u128>; 3] {
        let (first, last) = bounds(&self.subnet);
        let gw = (self.gateway.is_ipv6() == self.v6()).then(|| to_u128(self.gateway));
        [Some(first), (!self.v6()).then_some(last), gw]
    }

    fn is_reserved(&self, v: u128) -> bool {
        self.reserved_points().contains(&Some(v))
    }

    /// The dynamic range clipped to the subnet (a hand-edited state file could hold an
    /// `ip_range` that strays outside); `None` when nothing is left.
    fn dynamic_bounds(&self) -> Option<(u128, u128)> {
        let (s0, s1) = bounds(&self.subnet);
        let (r0, r1) = match self.ip_range {
            Some(r) if r.is_ipv6() == self.v6() => bounds(&r),
            Some(_) => return None,
            None => (s0, s1),
        };
        let (lo, hi) = (r0.max(s0), r1.min(s1));
        (lo <= hi).then_some((lo, hi))
    }

    fn check_static(&self, w: IpAddr) -> Result<(), IpamError> {
        if w.is_ipv6() && !self.v6() {
            return Err(IpamError::NoIpv6Subnet {
                network: self.network.clone(),
            });
        }
        if !self.contains(w) {
            return Err(IpamError::NotInSubnet {
                addr: w,
                subnet: self.subnet,
                network: self.network.clone(),
            });
        }
        if w == self.gateway {
            return Err(IpamError::IsGateway { addr: w });
        }
        let (first, last) = bounds(&self.subnet);
        let what = match to_u128(w) {
            v if v == first => Some("network"),
            v if v == last && !self.v6() => Some("broadcast"),
            _ => None,
        };
        if let Some(what) = what {
            return Err(IpamError::Reserved {
                addr: w,
                subnet: self.subnet,
                what,
            });
        }
        if let Some(owner) = self.leases.get(&w) {
            return Err(IpamError::InUse {
                addr: w,
                owner: owner.clone(),
            });
        }
        Ok(())
    }

    /// Round-robin: search (cursor, hi], then wrap to [lo, cursor].
    fn next_free(&self) -> Option<IpAddr> {
        let (lo, hi) = self.dynamic_bounds()?;
        let start = match self.cursor {
            Some(c) if c.is_ipv6() == self.v6() && (lo..=hi).contains(&to_u128(c)) => {
                to_u128(c).checked_add(1)
            }
            _ => Some(lo),
        };
        let found = match start {
            Some(s) if s <= hi => self.first_free(s, hi).or_else(|| self.first_free(lo, s - 1)),
            _ => self.first_free(lo, hi),
        };
        found.map(|v| self.ip(v))
    }

    /// Lowest address in [a, b] that is neither reserved nor leased. Walks leases and
    /// candidate in step: each iteration either returns or consumes one lease or one
    /// reserved point, so the loop runs at most leases-in-range + 3 times.
    fn first_free(&self, a: u128, b: u128) -> Option<u128> {
        if a > b {
            return None;
        }
        let mut leased = self
            .leases
            .range(self.ip(a)..=self.ip(b))
            .map(|(k, _)| to_u128(*k))
            .peekable();
        let mut c = a;
        loop {
            if c > b {
                return None;
            }
            if self.is_reserved(c) {
                c = c.checked_add(1)?;
                continue;
            }
            while leased.next_if(|l| *l < c).is_some() {}
            if leased.next_if_eq(&c).is_none() {
                return Some(c);
            }
            c = c.checked_add(1)?;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{new_pool, IpamConfig};
    use super::*;
    use crate::model::ParsedSubnet;

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn pool(name: &str, subnet: &str, gateway: Option<&str>, range: Option<&str>) -> Pool {
        let req = ParsedSubnet {
            subnet: subnet.parse().unwrap(),
            gateway: gateway.map(ip),
            ip_range: range.map(|r| r.parse().unwrap()),
        };
        let v6 = req.subnet.is_ipv6();
        new_pool(&IpamConfig::default(), name, v6, Some(&req), &[], &[]).unwrap()
    }

    #[test]
    fn static_errors_name_the_problem() {
        let mut p = pool("frontend", "10.1.0.0/24", None, None);
        assert_eq!(
            p.allocate("web/frontend", Some(ip("10.1.0.5"))),
            Ok(ip("10.1.0.5"))
        );
        let e = |p: &mut Pool, a: &str| p.allocate("x/frontend", Some(ip(a))).unwrap_err().to_string();
        assert_eq!(
            e(&mut p, "10.1.0.5"),
            "address 10.1.0.5 is already in use by web/frontend"
        );
        assert_eq!(
            e(&mut p, "10.2.0.5"),
            "address 10.2.0.5 is not in subnet 10.1.0.0/24 of network \"frontend\""
        );
        assert_eq!(e(&mut p, "10.1.0.1"), "address 10.1.0.1 is the network's gateway");
        assert_eq!(
            e(&mut p, "10.1.0.0"),
            "address 10.1.0.0 is the network address of subnet 10.1.0.0/24"
        );
        assert_eq!(
            e(&mut p, "10.1.0.255"),
            "address 10.1.0.255 is the broadcast address of subnet 10.1.0.0/24"
        );
        assert_eq!(e(&mut p, "fd00::5"), "network \"frontend\" has no IPv6 subnet");
        assert_eq!(p.leases.len(), 1, "failed requests lease nothing");
    }

    #[test]
    fn slash_30_has_one_address_besides_the_gateway() {
        let mut p = pool("tiny", "10.1.0.0/30", None, None);
        assert_eq!(p.free_count(), 1);
        assert_eq!(p.allocate("a/tiny", None), Ok(ip("10.1.0.2")));
        assert_eq!(p.free_count(), 0);
        let e = p.allocate("b/tiny", None).unwrap_err();
        assert_eq!(e.to_string(), "no free address in 10.1.0.0/30 (network \"tiny\")");
        assert!(p.release(ip("10.1.0.2")));
        assert!(!p.release(ip("10.1.0.2")));
        assert_eq!(p.allocate("b/tiny", None), Ok(ip("10.1.0.2")));
    }

    #[test]
    fn ip_range_limits_dynamic_but_not_static() {
        // .252-.254 of the range are usable; .255 is the subnet's broadcast.
        let mut p = pool("r", "10.1.0.0/24", None, Some("10.1.0.252/30"));
        assert_eq!(p.free_count(), 3);
        let got: Vec<IpAddr> = (0..3).map(|_| p.allocate("a/r", None).unwrap()).collect();
        assert_eq!(got, ["10.1.0.252", "10.1.0.253", "10.1.0.254"].map(ip));
        let e = p.allocate("a/r", None).unwrap_err();
        assert_eq!(e.to_string(), "no free address in 10.1.0.252/30 (network \"r\")");
        assert_eq!(p.allocate("b/r", Some(ip("10.1.0.7"))), Ok(ip("10.1.0.7")));
    }

    #[test]
    fn cursor_round_robins_past_freed_addresses() {
        let mut p = pool("rr", "10.1.0.0/29", None, None);
        // .2 to .6 are allocatable (.1 gateway, .7 broadcast).
        assert_eq!(p.allocate("a/rr", None), Ok(ip("10.1.0.2")));
        assert_eq!(p.allocate("b/rr", None), Ok(ip("10.1.0.3")));
        assert!(p.release(ip("10.1.0.2")));
        assert_eq!(
            p.allocate("c/rr", None),
            Ok(ip("10.1.0.4")),
            "a freed address is not reused at once"
        );
        assert_eq!(p.allocate("d/rr", Some(ip("10.1.0.6"))), Ok(ip("10.1.0.6")));
        assert_eq!(
            p.cursor,
            Some(ip("10.1.0.4")),
            "static requests leave the cursor alone"
        );
        assert_eq!(p.allocate("e/rr", None), Ok(ip("10.1.0.5")));
        assert_eq!(
            p.allocate("f/rr", None),
            Ok(ip("10.1.0.2")),
            "wraps to the freed address"
        );
        assert!(p.allocate("g/rr", None).is_err());
        assert_eq!(p.release_owner("b/rr"), 1);
        assert_eq!(p.release_owner("nobody"), 0);
        assert_eq!(p.allocate("g/rr", None), Ok(ip("10.1.0.3")));
    }

    #[test]
    fn gateway_inside_the_range_is_skipped() {
        let mut p = pool("g", "10.1.0.0/24", Some("10.1.0.2"), None);
        assert_eq!(p.allocate("a/g", None), Ok(ip("10.1.0.1")));
        assert_eq!(p.allocate("b/g", None), Ok(ip("10.1.0.3")));
    }

    #[test]
    fn v6_slash_64_with_a_thousand_leases() {
        let mut p = pool("six", "fd00:1::/64", None, None);
        assert_eq!(p.free_count(), (1u128 << 64) - 2);
        for i in 0..1000u32 {
            let a = p.allocate(&format!("s{i}/six"), None).unwrap();
            assert_eq!(
                a,
                IpAddr::V6((0xfd00_0001_0000_0000_0000_0000_0000_0002u128 + u128::from(i)).into())
            );
        }
        // A cursor pointing at the start makes the next search walk all 1,000 leases
        // in one pass over the map; the free tail of the /64 is never enumerated.
        p.cursor = None;
        assert_eq!(p.allocate("x/six", None), Ok(ip("fd00:1::3ea")));
        assert_eq!(p.owner_of(ip("fd00:1::2")), Some("s0/six"));
        assert!(
            p.contains(ip("fd00:1::ffff")) && !p.contains(ip("fd00:2::1")) && !p.contains(ip("10.0.0.1"))
        );
        assert_eq!(p.prefix_len(), 64);
    }

    #[test]
    fn nearly_full_slash_16() {
        let mut p = pool("big", "10.9.0.0/16", None, None);
        let n = p.free_count();
        assert_eq!(n, 65_533);
        for i in 0..n {
            p.allocate(&format!("s{i}/big"), None).unwrap();
        }
        assert!(p.allocate("x/big", None).is_err());
        assert!(p.release(ip("10.9.0.9")) && p.release(ip("10.9.255.200")));
        // The cursor sits at the top, so these wrap and scan the whole map: still cheap.
        assert_eq!(p.allocate("y/big", None), Ok(ip("10.9.0.9")));
        assert_eq!(p.allocate("z/big", None), Ok(ip("10.9.255.200")));
        assert_eq!(p.free_count(), 0);
    }

    #[test]
    fn top_of_the_address_space_does_not_overflow() {
        let mut p = pool("top", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffc/126", None, None);
        let got: Vec<IpAddr> = (0..2).map(|_| p.allocate("a/top", None).unwrap()).collect();
        assert_eq!(
            got,
            vec![
                ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:fffe"),
                ip("ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff")
            ]
        );
        assert!(p.allocate("a/top", None).is_err());
        let mut p = pool("top4", "255.255.255.252/30", None, None);
        assert_eq!(p.allocate("a/top4", None), Ok(ip("255.255.255.254")));
        assert!(p.allocate("a/top4", None).is_err());
    }
}
