//! IPAM: which subnet a new network gets and which address each endpoint gets in it.
//!
//! Pure logic over plain data, in the spirit of CNI host-local and libnetwork's default
//! IPAM: no I/O and no locks. The daemon serialises calls and persists every [`Pool`]
//! (it is serde-serializable), so a restart resumes with the same leases and cursor.
//! `pools.rs` chooses subnets ([`new_pool`]), `lease.rs` hands out addresses inside one.
//!
//! Addresses are handled as `u128` internally so IPv4 and IPv6 share one arithmetic;
//! ranges are inclusive `(first, last)` pairs so that the top of the address space never
//! needs a value one past it.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::IpNetwork;
use serde::{Deserialize, Serialize};

mod lease;
mod pools;
#[cfg(test)]
mod props;

pub use pools::new_pool;

/// One block of default address space, carved into subnets of `/size` for networks
/// created without `--subnet` (Docker's `default-address-pools`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct DefaultPool {
    pub base: IpNetwork,
    pub size: u8,
}

/// Default pools per family, tried in order. Missing keys in a config file keep Docker's
/// defaults, so setting only `pools4` leaves the IPv6 pools alone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct IpamConfig {
    pub pools4: Vec<DefaultPool>,
    pub pools6: Vec<DefaultPool>,
}

impl Default for IpamConfig {
    /// Docker's defaults: 172.17-172.31 as one /16 each, then 192.168.0.0/16 in /20s.
    /// Docker's default bridge would take 172.17; netd has none, so user networks start
    /// there. IPv6 uses a ULA /40 split in /64s.
    fn default() -> Self {
        let mut pools4: Vec<DefaultPool> = (17..=31)
            .map(|b| DefaultPool {
                base: v4net(Ipv4Addr::new(172, b, 0, 0), 16),
                size: 16,
            })
            .collect();
        pools4.push(DefaultPool {
            base: v4net(Ipv4Addr::new(192, 168, 0, 0), 16),
            size: 20,
        });
        let ula = Ipv6Addr::new(0xfd4e, 0x6574, 0x6400, 0, 0, 0, 0, 0);
        let pools6 = vec![DefaultPool {
            base: IpNetwork::V6(v6net(ula, 40)),
            size: 64,
        }];
        IpamConfig { pools4, pools6 }
    }
}

// The constructors below only see constant, valid prefix lengths; falling back to a
// host route keeps them total without an unwrap.
fn v4net(a: Ipv4Addr, prefix: u8) -> IpNetwork {
    IpNetwork::V4(ipnetwork::Ipv4Network::new(a, prefix).unwrap_or_else(|_| a.into()))
}
fn v6net(a: Ipv6Addr, prefix: u8) -> ipnetwork::Ipv6Network {
    ipnetwork::Ipv6Network::new(a, prefix).unwrap_or_else(|_| a.into())
}

impl IpamConfig {
    /// Checks every default pool; the daemon calls this at start-up so a bad config file
    /// fails there, not at the first `network create`.
    pub fn validate(&self) -> Result<(), IpamError> {
        validate_defaults(&self.pools4, false)?;
        validate_defaults(&self.pools6, true)
    }
}

pub(crate) fn validate_defaults(pools: &[DefaultPool], v6: bool) -> Result<(), IpamError> {
    for p in pools {
        let bad = |why: &str| IpamError::BadDefaultPool {
            base: p.base,
            size: p.size,
            why: why.into(),
        };
        if p.base.is_ipv6() != v6 {
            return Err(bad(if v6 {
                "an IPv4 base in the IPv6 pools"
            } else {
                "an IPv6 base in the IPv4 pools"
            }));
        }
        if p.size < p.base.prefix() {
            return Err(bad("size must be at least the base's prefix length"));
        }
        if p.size > max_prefix(v6) {
            return Err(bad(if v6 {
                "size must be /126 or larger"
            } else {
                "size must be /30 or larger"
            }));
        }
    }
    Ok(())
}

/// The address space of one network: its subnet, gateway, optional `--ip-range` and
/// the addresses leased in it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Pool {
    pub network: String,
    pub subnet: IpNetwork,
    pub gateway: IpAddr,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_range: Option<IpNetwork>,
    /// Address -> owner (e.g. "sandbox/network").
    #[serde(default)]
    pub leases: BTreeMap<IpAddr, String>,
    /// Last address handed out dynamically; the next search starts after it so that a
    /// freed address is not reused at once (a stale ARP/conntrack entry elsewhere would
    /// send its traffic to the new owner), as Docker does.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cursor: Option<IpAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("subnet {subnet} overlaps with network {network:?} ({other})")]
    OverlapsNetwork {
        subnet: IpNetwork,
        network: String,
        other: IpNetwork,
    },
    #[error("subnet {subnet} overlaps with a route on the host ({route})")]
    OverlapsHostRoute { subnet: IpNetwork, route: IpNetwork },
    #[error("no available {family} address pool: every default pool is in use; pass --subnet")]
    PoolsExhausted { family: &'static str },
    #[error("address {addr} is already in use by {owner}")]
    InUse { addr: IpAddr, owner: String },
    #[error("address {addr} is not in subnet {subnet} of network {network:?}")]
    NotInSubnet {
        addr: IpAddr,
        subnet: IpNetwork,
        network: String,
    },
    #[error("address {addr} is the network's gateway")]
    IsGateway { addr: IpAddr },
    #[error("address {addr} is the {what} address of subnet {subnet}")]
    Reserved {
        addr: IpAddr,
        subnet: IpNetwork,
        what: &'static str,
    },
    #[error("no free address in {range} (network {network:?})")]
    Exhausted { range: IpNetwork, network: String },
    #[error("network {network:?} has no IPv6 subnet")]
    NoIpv6Subnet { network: String },
    #[error("subnet {subnet} is not an {family} subnet")]
    WrongFamily { subnet: IpNetwork, family: &'static str },
    #[error("subnet {subnet} is too small: use /{max} or larger")]
    TooSmall { subnet: IpNetwork, max: u8 },
    #[error("gateway {gateway} is outside subnet {subnet}")]
    GatewayOutside { gateway: IpAddr, subnet: IpNetwork },
    #[error("gateway {gateway} is the {what} address of {subnet}")]
    GatewayReserved {
        gateway: IpAddr,
        subnet: IpNetwork,
        what: &'static str,
    },
    #[error("ip-range {range} is not inside subnet {subnet}")]
    RangeOutside { range: IpNetwork, subnet: IpNetwork },
    #[error("default address pool {base} with size /{size} is invalid: {why}")]
    BadDefaultPool { base: IpNetwork, size: u8, why: String },
}

/// True when the two prefixes share at least one address (same family only). CIDR
/// blocks nest or are disjoint, so an interval test is exact.
pub fn overlaps(a: &IpNetwork, b: &IpNetwork) -> bool {
    if a.is_ipv6() != b.is_ipv6() {
        return false;
    }
    let (a0, a1) = bounds(a);
    let (b0, b1) = bounds(b);
    a0 <= b1 && b0 <= a1
}

fn family(v6: bool) -> &'static str {
    if v6 {
        "IPv6"
    } else {
        "IPv4"
    }
}

/// Longest prefix a network may have: IPv4 needs network, gateway, one host and
/// broadcast; IPv6 has no broadcast but keeps the subnet-router anycast address.
fn max_prefix(v6: bool) -> u8 {
    if v6 {
        126
    } else {
        30
    }
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(a) => u128::from(u32::from(a)),
        IpAddr::V6(a) => u128::from(a),
    }
}

/// Inverse of [`to_u128`]; callers only pass IPv4 values below 2^32.
fn from_u128(v: u128, v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::from(v))
    } else {
        IpAddr::V4(Ipv4Addr::from(v as u32))
    }
}

/// First and last address of a prefix, inclusive.
fn bounds(n: &IpNetwork) -> (u128, u128) {
    let bits: u32 = if n.is_ipv4() { 32 } else { 128 };
    let host = bits.saturating_sub(u32::from(n.prefix()));
    let span = 1u128.checked_shl(host).map_or(u128::MAX, |s| s - 1);
    let first = to_u128(n.network());
    (first, first | span)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> IpNetwork {
        s.parse().unwrap()
    }

    #[test]
    fn overlaps_is_family_aware_and_exact() {
        assert!(overlaps(&n("10.0.0.0/8"), &n("10.0.2.0/24")));
        assert!(overlaps(&n("10.0.2.0/24"), &n("10.0.0.0/8")));
        assert!(!overlaps(&n("10.0.0.0/24"), &n("10.0.1.0/24")));
        assert!(!overlaps(&n("0.0.0.0/0"), &n("::/0")));
        assert!(overlaps(&n("::/0"), &n("ffff::/16")));
        assert!(overlaps(&n("255.255.255.252/30"), &n("255.255.255.255/32")));
    }

    #[test]
    fn docker_defaults() {
        let c = IpamConfig::default();
        assert_eq!(c.pools4.len(), 16);
        assert_eq!(
            c.pools4[0],
            DefaultPool {
                base: n("172.17.0.0/16"),
                size: 16
            }
        );
        assert_eq!(
            c.pools4[14],
            DefaultPool {
                base: n("172.31.0.0/16"),
                size: 16
            }
        );
        assert_eq!(
            c.pools4[15],
            DefaultPool {
                base: n("192.168.0.0/16"),
                size: 20
            }
        );
        assert_eq!(
            c.pools6,
            vec![DefaultPool {
                base: n("fd4e:6574:6400::/40"),
                size: 64
            }]
        );
        c.validate().unwrap();
    }

    #[test]
    fn config_from_toml_keeps_missing_family_defaults() {
        let c: IpamConfig = toml::from_str("pools4 = [{ base = \"10.10.0.0/16\", size = 24 }]").unwrap();
        assert_eq!(
            c.pools4,
            vec![DefaultPool {
                base: n("10.10.0.0/16"),
                size: 24
            }]
        );
        assert_eq!(c.pools6, IpamConfig::default().pools6);
    }

    #[test]
    fn bad_default_pools_are_named() {
        let mut c = IpamConfig {
            pools4: vec![DefaultPool {
                base: n("10.0.0.0/16"),
                size: 8,
            }],
            ..IpamConfig::default()
        };
        let e = c.validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "default address pool 10.0.0.0/16 with size /8 is invalid: size must be at least the base's prefix length"
        );
        c.pools4 = vec![DefaultPool {
            base: n("10.0.0.0/16"),
            size: 31,
        }];
        assert!(c.validate().unwrap_err().to_string().contains("/30 or larger"));
        c.pools4 = vec![DefaultPool {
            base: n("fd00::/16"),
            size: 64,
        }];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("IPv6 base in the IPv4 pools"));
    }

    #[test]
    fn pool_round_trips_through_json() {
        let mut leases = BTreeMap::new();
        leases.insert("10.1.0.2".parse().unwrap(), "web/frontend".to_string());
        let p = Pool {
            network: "frontend".into(),
            subnet: n("10.1.0.0/24"),
            gateway: "10.1.0.1".parse().unwrap(),
            ip_range: Some(n("10.1.0.128/25")),
            leases,
            cursor: Some("10.1.0.2".parse().unwrap()),
        };
        let s = serde_json::to_string(&p).unwrap();
        assert_eq!(serde_json::from_str::<Pool>(&s).unwrap(), p);
    }
}
