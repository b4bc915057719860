//! Subnet choice for a new network: check a user's `--subnet` against other networks
//! and host routes, or carve the first free block out of the default pools.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{bounds, family, from_u128, max_prefix, overlaps, to_u128, validate_defaults};
use super::{IpamConfig, IpamError, Pool};
use crate::model::ParsedSubnet;

/// Chooses the subnet for a new network. `req` is the user's subnet (with optional
/// gateway and ip-range); `None` picks from the default pools of that family.
///
/// `existing` holds every other network's pool; `host_routes` the prefixes routed on
/// the host. Default blocks overlapping either are skipped. A user subnet overlapping
/// either is refused, as Docker does: the bridge route would shadow the host's route
/// (or the other way round) and traffic would silently go to the wrong place.
/// Default routes (`/0`) are ignored since they overlap everything.
pub fn new_pool(
    cfg: &IpamConfig,
    network: &str,
    v6: bool,
    req: Option<&ParsedSubnet>,
    existing: &[&Pool],
    host_routes: &[IpNetwork],
) -> Result<Pool, IpamError> {
    let routes = host_routes
        .iter()
        .filter(|r| r.is_ipv6() == v6 && r.prefix() != 0);
    let Some(req) = req else {
        let taken: Vec<(u128, u128)> = existing
            .iter()
            .map(|p| &p.subnet)
            .chain(routes)
            .filter(|n| n.is_ipv6() == v6)
            .map(bounds)
            .collect();
        let defaults = if v6 { &cfg.pools6 } else { &cfg.pools4 };
        validate_defaults(defaults, v6)?;
        for d in defaults {
            if let Some(subnet) = first_fit(d.base, d.size, &taken) {
                let gateway = first_host(&subnet);
                return Ok(empty_pool(network, subnet, gateway, None));
            }
        }
        return Err(IpamError::PoolsExhausted { family: family(v6) });
    };

    let subnet = req.subnet;
    if subnet.is_ipv6() != v6 {
        return Err(IpamError::WrongFamily {
            subnet,
            family: family(v6),
        });
    }
    if subnet.prefix() > max_prefix(v6) {
        return Err(IpamError::TooSmall {
            subnet,
            max: max_prefix(v6),
        });
    }
    // Host bits would make `network()` and `ip()` disagree everywhere downstream; the
    // model refuses them already, this keeps a hand-built request honest.
    let subnet = IpNetwork::new(subnet.network(), subnet.prefix()).map_err(|_| IpamError::TooSmall {
        subnet,
        max: max_prefix(v6),
    })?;
    if let Some(p) = existing.iter().find(|p| overlaps(&subnet, &p.subnet)) {
        return Err(IpamError::OverlapsNetwork {
            subnet,
            network: p.network.clone(),
            other: p.subnet,
        });
    }
    if let Some(r) = routes.clone().find(|r| overlaps(&subnet, r)) {
        return Err(IpamError::OverlapsHostRoute { subnet, route: *r });
    }
    if let Some(range) = req.ip_range {
        let (s0, s1) = bounds(&subnet);
        let (r0, r1) = bounds(&range);
        if range.is_ipv6() != v6 || r0 < s0 || r1 > s1 {
            return Err(IpamError::RangeOutside { range, subnet });
        }
    }
    let gateway = match req.gateway {
        Some(g) => {
            if g.is_ipv6() != v6 || !subnet.contains(g) {
                return Err(IpamError::GatewayOutside { gateway: g, subnet });
            }
            let (s0, s1) = bounds(&subnet);
            let what = if to_u128(g) == s0 {
                Some("network")
            } else if !v6 && to_u128(g) == s1 {
                Some("broadcast")
            } else {
                None
            };
            if let Some(what) = what {
                return Err(IpamError::GatewayReserved {
                    gateway: g,
                    subnet,
                    what,
                });
            }
            g
        }
        None => first_host(&subnet),
    };
    Ok(empty_pool(network, subnet, gateway, req.ip_range))
}

fn empty_pool(network: &str, subnet: IpNetwork, gateway: IpAddr, ip_range: Option<IpNetwork>) -> Pool {
    Pool {
        network: network.to_string(),
        subnet,
        gateway,
        ip_range,
        leases: BTreeMap::new(),
        cursor: None,
    }
}

/// Network address + 1: Docker's default gateway.
fn first_host(subnet: &IpNetwork) -> IpAddr {
    let (first, _) = bounds(subnet);
    from_u128(first.saturating_add(1), subnet.is_ipv6())
}

/// The first `/size` block of `base` that overlaps nothing in `taken`. Rather than test
/// each of up to 2^24 blocks (a /40 in /64s), it jumps past the end of whatever
/// conflicts, so the cost is bounded by the number of taken prefixes.
fn first_fit(base: IpNetwork, size: u8, taken: &[(u128, u128)]) -> Option<IpNetwork> {
    let v6 = base.is_ipv6();
    let bits: u32 = if v6 { 128 } else { 32 };
    let (b0, b1) = bounds(&base);
    // `mask` = block size - 1; a /0 block is the whole space.
    let mask = 1u128
        .checked_shl(bits - u32::from(size))
        .map_or(u128::MAX, |s| s - 1);
    let mut c = b0 & !mask;
    loop {
        let end = c | mask;
        let clash = taken
            .iter()
            .filter(|(lo, hi)| *lo <= end && c <= *hi)
            .map(|(_, hi)| *hi)
            .max();
        match clash {
            // `size` passed validation, so constructing the prefix cannot fail.
            None => return IpNetwork::new(from_u128(c, v6), size).ok(),
            Some(hi) => {
                let next = hi.checked_add(1)?.checked_add(mask)? & !mask;
                if next > b1 || next <= c {
                    return None;
                }
                c = next;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::DefaultPool;
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }
    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }
    fn user(subnet: &str, gateway: Option<&str>, range: Option<&str>) -> ParsedSubnet {
        ParsedSubnet {
            subnet: n(subnet),
            gateway: gateway.map(ip),
            ip_range: range.map(n),
        }
    }
    fn pick(existing: &[&Pool], routes: &[IpNetwork]) -> Result<Pool, IpamError> {
        new_pool(&IpamConfig::default(), "n", false, None, existing, routes)
    }

    #[test]
    fn first_network_gets_172_17_and_then_the_next() {
        let a = pick(&[], &[]).unwrap();
        assert_eq!((a.subnet, a.gateway), (n("172.17.0.0/16"), ip("172.17.0.1")));
        assert_eq!((a.ip_range, a.cursor, a.leases.len()), (None, None, 0));
        let b = pick(&[&a], &[]).unwrap();
        assert_eq!(b.subnet, n("172.18.0.0/16"));
    }

    #[test]
    fn defaults_skip_host_routes() {
        let a = pick(&[], &[n("172.17.0.0/16")]).unwrap();
        assert_eq!(a.subnet, n("172.18.0.0/16"));
        // A route inside a block taints the whole block; the default route taints nothing.
        let a = pick(&[], &[n("0.0.0.0/0"), n("172.17.3.0/24"), n("172.18.0.0/15")]).unwrap();
        assert_eq!(a.subnet, n("172.20.0.0/16"));
    }

    #[test]
    fn after_172_come_192_168_slash_20s_then_exhaustion() {
        let routes = [n("172.16.0.0/12"), n("192.168.0.0/20"), n("192.168.17.0/24")];
        let a = pick(&[], &routes).unwrap();
        assert_eq!(a.subnet, n("192.168.32.0/20"));
        let e = pick(&[], &[n("172.16.0.0/12"), n("192.168.0.0/16")]).unwrap_err();
        assert_eq!(
            e.to_string(),
            "no available IPv4 address pool: every default pool is in use; pass --subnet"
        );
    }

    #[test]
    fn v6_default_is_a_ula_slash_64() {
        let cfg = IpamConfig::default();
        let a = new_pool(&cfg, "n", true, None, &[], &[]).unwrap();
        assert_eq!(
            (a.subnet, a.gateway),
            (n("fd4e:6574:6400::/64"), ip("fd4e:6574:6400::1"))
        );
        let b = new_pool(&cfg, "m", true, None, &[&a], &[n("fd4e:6574:6400:1::/64")]).unwrap();
        assert_eq!(b.subnet, n("fd4e:6574:6400:2::/64"));
        // A host route over most of the /40 is jumped in one step, not 2^24.
        let big = [n("fd4e:6574:6400::/41"), n("fd4e:6574:6480::/42")];
        let c = new_pool(&cfg, "m", true, None, &[], &big).unwrap();
        assert_eq!(c.subnet, n("fd4e:6574:64c0::/64"));
        let e = new_pool(&cfg, "m", true, None, &[], &[n("fd4e:6574:6400::/40")]).unwrap_err();
        assert_eq!(e, IpamError::PoolsExhausted { family: "IPv6" });
    }

    #[test]
    fn custom_defaults_and_top_of_address_space() {
        let cfg = IpamConfig {
            pools4: vec![DefaultPool {
                base: n("255.255.255.0/24"),
                size: 30,
            }],
            pools6: vec![DefaultPool {
                base: n("ffff::/16"),
                size: 16,
            }],
        };
        let a = new_pool(&cfg, "n", false, None, &[], &[n("255.255.255.0/25")]).unwrap();
        assert_eq!(a.subnet, n("255.255.255.128/30"));
        let e = new_pool(&cfg, "n", false, None, &[], &[n("255.255.255.0/24")]).unwrap_err();
        assert_eq!(e, IpamError::PoolsExhausted { family: "IPv4" });
        let e = new_pool(&cfg, "n", true, None, &[], &[n("ffff:ffff::/32")]).unwrap_err();
        assert_eq!(e, IpamError::PoolsExhausted { family: "IPv6" });
    }

    #[test]
    fn user_subnet_overlapping_a_network_is_refused_by_name() {
        let backend = new_pool(
            &IpamConfig::default(),
            "backend",
            false,
            Some(&user("10.1.0.0/24", None, None)),
            &[],
            &[],
        )
        .unwrap();
        let e = new_pool(
            &IpamConfig::default(),
            "x",
            false,
            Some(&user("10.1.0.0/16", None, None)),
            &[&backend],
            &[],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.1.0.0/16 overlaps with network \"backend\" (10.1.0.0/24)"
        );
    }

    #[test]
    fn user_subnet_overlapping_a_host_route_is_refused() {
        let e = new_pool(
            &IpamConfig::default(),
            "x",
            false,
            Some(&user("10.0.0.0/8", None, None)),
            &[],
            &[n("0.0.0.0/0"), n("fd00::/8"), n("10.0.2.0/24")],
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "subnet 10.0.0.0/8 overlaps with a route on the host (10.0.2.0/24)"
        );
    }

    #[test]
    fn user_subnet_gateway_and_range() {
        let cfg = IpamConfig::default();
        let p = new_pool(
            &cfg,
            "x",
            false,
            Some(&user("10.1.0.0/24", None, Some("10.1.0.128/25"))),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(
            (p.gateway, p.ip_range),
            (ip("10.1.0.1"), Some(n("10.1.0.128/25")))
        );
        let p = new_pool(
            &cfg,
            "x",
            false,
            Some(&user("10.1.0.0/24", Some("10.1.0.254"), None)),
            &[],
            &[],
        )
        .unwrap();
        assert_eq!(p.gateway, ip("10.1.0.254"));

        let bad = |s: ParsedSubnet, v6: bool| {
            new_pool(&cfg, "x", v6, Some(&s), &[], &[])
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            bad(user("10.1.0.0/24", None, Some("10.2.0.0/25")), false),
            "ip-range 10.2.0.0/25 is not inside subnet 10.1.0.0/24"
        );
        assert_eq!(
            bad(user("10.1.0.0/24", None, Some("10.1.0.0/23")), false),
            "ip-range 10.1.0.0/23 is not inside subnet 10.1.0.0/24"
        );
        assert_eq!(
            bad(user("10.1.0.0/24", Some("10.2.0.1"), None), false),
            "gateway 10.2.0.1 is outside subnet 10.1.0.0/24"
        );
        assert_eq!(
            bad(user("10.1.0.0/24", Some("10.1.0.255"), None), false),
            "gateway 10.1.0.255 is the broadcast address of 10.1.0.0/24"
        );
        assert_eq!(
            bad(user("fd00::/64", Some("fd00::"), None), true),
            "gateway fd00:: is the network address of fd00::/64"
        );
        assert_eq!(
            bad(user("10.1.0.0/31", None, None), false),
            "subnet 10.1.0.0/31 is too small: use /30 or larger"
        );
        assert_eq!(
            bad(user("fd00::/64", None, None), false),
            "subnet fd00::/64 is not an IPv4 subnet"
        );
    }

    #[test]
    fn v6_user_subnet_ignores_v4_networks_and_routes() {
        let cfg = IpamConfig::default();
        let v4 = pick(&[], &[]).unwrap();
        let p = new_pool(
            &cfg,
            "x",
            true,
            Some(&user("fd00:1::/64", None, None)),
            &[&v4],
            &[n("10.0.0.0/8")],
        )
        .unwrap();
        assert_eq!(p.gateway, ip("fd00:1::1"));
    }

    #[test]
    fn bad_default_pool_is_reported_on_use() {
        let cfg = IpamConfig {
            pools6: vec![DefaultPool {
                base: n("fd00::/64"),
                size: 48,
            }],
            ..IpamConfig::default()
        };
        let e = new_pool(&cfg, "x", true, None, &[], &[]).unwrap_err();
        assert!(matches!(e, IpamError::BadDefaultPool { .. }), "{e}");
    }
}
