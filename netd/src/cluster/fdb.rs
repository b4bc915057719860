//! What a node's VXLAN device must know of the other nodes' endpoints, and the changes
//! that bring it there. Pure: the agent feeds it the store's endpoints and applies the
//! answer (`kernel::vxlan::apply_remote`).
//!
//! Each remote endpoint is an FDB entry (its MAC → its node's VTEP) and a permanent
//! neighbour entry (its IP → its MAC), which the device's `proxy` mode answers ARP
//! from. There is no all-zeros entry: nothing is flooded, so ARP and unknown unicast
//! never leave the node.

use std::collections::BTreeSet;
use std::net::Ipv4Addr;

use super::EndpointRecord;
use crate::driver::bridge::parse_mac;
use crate::kernel::vxlan::RemoteOp;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct RemoteEntry {
    pub ip: Ipv4Addr,
    pub mac: [u8; 6],
    pub vtep: Ipv4Addr,
}

/// The remote entries of network `net` on node `me`: every endpoint of the network on
/// another node. A record with a MAC that does not parse is skipped.
pub fn wanted(net: &str, me: &str, endpoints: &[EndpointRecord]) -> BTreeSet<RemoteEntry> {
    endpoints
        .iter()
        .filter(|e| e.network == net && e.node != me)
        .filter_map(|e| {
            Some(RemoteEntry {
                ip: e.ip,
                mac: parse_mac(&e.mac)?,
                vtep: e.vtep,
            })
        })
        .collect()
}

/// The operations from `have` to `want`: deletions first (a MAC or IP that moved is
/// deleted, then set again), then additions, FDB before neighbour so the device never
/// answers ARP for a MAC it cannot reach yet.
pub fn diff(have: &BTreeSet<RemoteEntry>, want: &BTreeSet<RemoteEntry>) -> Vec<RemoteOp> {
    let mut ops = Vec::new();
    let still_mac: BTreeSet<[u8; 6]> = want.iter().map(|e| e.mac).collect();
    let still_ip: BTreeSet<Ipv4Addr> = want.iter().map(|e| e.ip).collect();
    for e in have.difference(want) {
        if !still_ip.contains(&e.ip) {
            ops.push(RemoteOp::NeighDel { ip: e.ip });
        }
        if !still_mac.contains(&e.mac) {
            ops.push(RemoteOp::FdbDel { mac: e.mac });
        }
    }
    for e in want.difference(have) {
        ops.push(RemoteOp::FdbSet {
            mac: e.mac,
            vtep: e.vtep,
        });
        ops.push(RemoteOp::NeighSet { ip: e.ip, mac: e.mac });
    }
    ops
}

/// What to delete from a device that holds `fdb` (MAC → VTEP) and `neigh` (permanent
/// IPs) but should hold only `want`: entries left by an earlier run of the daemon (a
/// VXLAN device is kept across restarts) or made by hand on netd's device. The agent
/// sweeps when it has no record of what it applied (its first pass, and every
/// `REAPPLY_EVERY` passes); entries of `want` are then set again in full.
pub fn stale(fdb: &[([u8; 6], Ipv4Addr)], neigh: &[Ipv4Addr], want: &BTreeSet<RemoteEntry>) -> Vec<RemoteOp> {
    let macs: BTreeSet<[u8; 6]> = want.iter().map(|e| e.mac).collect();
    let ips: BTreeSet<Ipv4Addr> = want.iter().map(|e| e.ip).collect();
    let mut ops: Vec<RemoteOp> = neigh
        .iter()
        .filter(|ip| !ips.contains(ip))
        .map(|&ip| RemoteOp::NeighDel { ip })
        .collect();
    ops.extend(
        fdb.iter()
            .filter(|(mac, _)| !macs.contains(mac))
            .map(|&(mac, _)| RemoteOp::FdbDel { mac }),
    );
    ops.sort();
    ops.dedup();
    ops
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ep(node: &str, sb: &str, ip: &str, mac: &str, vtep: &str) -> EndpointRecord {
        EndpointRecord {
            network: "ov".into(),
            node: node.into(),
            sandbox: sb.into(),
            ip: ip.parse().unwrap(),
            mac: mac.into(),
            vtep: vtep.parse().unwrap(),
            names: vec![sb.into()],
            labels: Default::default(),
            lb: false,
        }
    }

    #[test]
    fn a_sweep_deletes_what_is_not_wanted_and_keeps_what_is() {
        let eps = vec![ep("h2", "b", "10.20.0.66", "02:00:00:00:00:02", "10.9.0.2")];
        let want = wanted("ov", "h1", &eps);
        let fdb = [
            ([2, 0, 0, 0, 0, 2], "10.9.0.9".parse().unwrap()), // wanted MAC, old VTEP: set again, not deleted
            ([2, 0, 0, 0, 0, 7], "10.9.0.7".parse().unwrap()),
        ];
        let neigh = ["10.20.0.66".parse().unwrap(), "10.20.0.77".parse().unwrap()];
        assert_eq!(
            stale(&fdb, &neigh, &want),
            vec![
                RemoteOp::FdbDel {
                    mac: [2, 0, 0, 0, 0, 7]
                },
                RemoteOp::NeighDel {
                    ip: "10.20.0.77".parse().unwrap()
                },
            ]
        );
        assert!(stale(&[], &[], &want).is_empty());
        assert_eq!(
            stale(&fdb, &neigh, &BTreeSet::new()).len(),
            4,
            "nothing wanted: all go"
        );
    }

    #[test]
    fn remote_endpoints_only_and_a_diff_that_converges() {
        let eps = vec![
            ep("h1", "a", "10.20.0.2", "02:00:00:00:00:01", "10.9.0.1"),
            ep("h2", "b", "10.20.0.66", "02:00:00:00:00:02", "10.9.0.2"),
            ep("h3", "c", "10.20.0.130", "02:00:00:00:00:03", "10.9.0.3"),
            ep("h3", "bad", "10.20.0.131", "not-a-mac", "10.9.0.3"),
        ];
        let want = wanted("ov", "h1", &eps);
        assert_eq!(want.len(), 2);
        assert!(want
            .iter()
            .all(|e| e.vtep != "10.9.0.1".parse::<Ipv4Addr>().unwrap()));
        assert!(wanted("other", "h1", &eps).is_empty());
        let ops = diff(&BTreeSet::new(), &want);
        assert_eq!(ops.len(), 4);
        assert!(matches!(ops[0], RemoteOp::FdbSet { .. }) && matches!(ops[1], RemoteOp::NeighSet { .. }));
        assert!(diff(&want, &want).is_empty());
        // h3 died: its entries go, h2's stay.
        let after = wanted("ov", "h1", &eps[..2]);
        let ops = diff(&want, &after);
        assert_eq!(
            ops,
            vec![
                RemoteOp::NeighDel {
                    ip: "10.20.0.130".parse().unwrap()
                },
                RemoteOp::FdbDel {
                    mac: [2, 0, 0, 0, 0, 3]
                }
            ]
        );
        // b moved to h3 with the same MAC and IP: only the FDB entry is set again.
        let moved = wanted(
            "ov",
            "h1",
            &[ep("h3", "b", "10.20.0.66", "02:00:00:00:00:02", "10.9.0.3")],
        );
        let ops = diff(&after, &moved);
        assert_eq!(
            ops,
            vec![
                RemoteOp::FdbSet {
                    mac: [2, 0, 0, 0, 0, 2],
                    vtep: "10.9.0.3".parse().unwrap()
                },
                RemoteOp::NeighSet {
                    ip: "10.20.0.66".parse().unwrap(),
                    mac: [2, 0, 0, 0, 0, 2]
                }
            ]
        );
    }
}
