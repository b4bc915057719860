//! The `ipam` section with netd's own (or host-local's) keys, as the subnets of netd's
//! network request: netd's ranges are CIDRs, host-local's are start and end addresses.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::{invalid, IpamConf, RangeConf, SubnetSpec};
use crate::error::{code, CniError, Result};

pub(super) fn parse_ip(what: &str, s: &str) -> Result<IpAddr> {
    s.trim()
        .parse()
        .map_err(|_| invalid(format!("ipam {what} {s:?} is not an IP address")))
}

/// The smallest CIDR holding both `a` and `b`.
fn covering(a: IpAddr, b: IpAddr) -> IpNetwork {
    let (x, y, bits) = match (a, b) {
        (IpAddr::V4(a), IpAddr::V4(b)) => (u128::from(u32::from(a)), u128::from(u32::from(b)), 32u32),
        (a, b) => (to_u128(a), to_u128(b), 128u32),
    };
    let diff = x ^ y;
    let host_bits = 128 - diff.leading_zeros();
    let prefix = bits.saturating_sub(host_bits) as u8;
    IpNetwork::new(a, prefix)
        .map(|n| IpNetwork::new(n.network(), prefix).unwrap_or(n))
        .unwrap_or_else(|_| IpNetwork::from(a))
}

fn to_u128(ip: IpAddr) -> u128 {
    match ip {
        IpAddr::V4(v) => u128::from(u32::from(v)),
        IpAddr::V6(v) => u128::from(v),
    }
}

impl IpamConf {
    /// host-local's keys as netd subnets: the first range of each range set (at most one
    /// IPv4 and one IPv6), or the top-level `subnet`.
    pub fn subnets(&self) -> Result<Vec<SubnetSpec>> {
        let mut ranges: Vec<RangeConf> = self
            .ranges
            .iter()
            .filter_map(|set| set.first().cloned())
            .collect();
        if let Some(s) = &self.subnet {
            ranges.insert(
                0,
                RangeConf {
                    subnet: s.clone(),
                    range_start: self.range_start.clone(),
                    range_end: self.range_end.clone(),
                    gateway: self.gateway.clone(),
                },
            );
        }
        let mut out: Vec<SubnetSpec> = Vec::new();
        for r in ranges {
            let subnet: IpNetwork = r
                .subnet
                .trim()
                .parse()
                .map_err(|_| invalid(format!("ipam subnet {:?} is not a CIDR", r.subnet)))?;
            // host-local accepts host bits in the subnet; netd wants the network address.
            let subnet =
                IpNetwork::new(subnet.network(), subnet.prefix()).map_err(|e| invalid(e.to_string()))?;
            let gateway = r.gateway.as_deref().map(|g| parse_ip("gateway", g)).transpose()?;
            let start = r
                .range_start
                .as_deref()
                .map(|g| parse_ip("rangeStart", g))
                .transpose()?;
            let end = r
                .range_end
                .as_deref()
                .map(|g| parse_ip("rangeEnd", g))
                .transpose()?;
            for ip in [gateway, start, end].into_iter().flatten() {
                if !subnet.contains(ip) || ip.is_ipv4() != subnet.is_ipv4() {
                    return Err(invalid(format!("ipam: {ip} is outside subnet {subnet}")));
                }
            }
            let ip_range = match (start, end) {
                (None, None) => None,
                (s, e) => {
                    let s = s.unwrap_or(subnet.network());
                    let e = e.unwrap_or(subnet.broadcast());
                    if to_u128(s) > to_u128(e) {
                        return Err(invalid(format!("ipam: rangeStart {s} is after rangeEnd {e}")));
                    }
                    Some(covering(s, e))
                }
            };
            if out.iter().any(|o| o.subnet.is_ipv4() == subnet.is_ipv4()) {
                return Err(CniError::new(
                    code::UNSUPPORTED_FIELD,
                    "ipam: more than one IPv4 or IPv6 range set (netd uses one subnet per family)",
                ));
            }
            out.push(SubnetSpec {
                subnet,
                gateway,
                ip_range,
            });
        }
        Ok(out)
    }
}
