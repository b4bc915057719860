//! nftables isolation, masquerade, anti-spoofing and port publishing.
//!
//! The engine describes what the firewall must do as a `FwState` (plain data derived from
//! the model); `ruleset` turns a state into nft batches: `full` (create or restore
//! everything netd owns) and `diff` (the smallest batch from one state to the next). Each
//! batch is applied by the kernel layer as one atomic transaction.

pub mod ruleset;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnetwork::{Ipv4Network, Ipv6Network};
use serde::{Deserialize, Serialize};

use crate::model::Proto;

/// Table names: `inet netd` (filter + nat), `bridge netd` (anti-spoofing, ICC).
pub const TABLE: &str = "netd";
/// The chain netd creates once and never flushes (Docker's DOCKER-USER): jumped to first
/// from netd's forward chain, for the operator's own rules.
pub const USER_CHAIN: &str = "user";

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwNetwork {
    pub name: String,
    pub bridge: String,
    pub subnet4: Option<Ipv4Network>,
    pub subnet6: Option<Ipv6Network>,
    pub internal: bool,
    pub icc: bool,
    pub masquerade: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwEndpoint {
    /// Host-side veth (a bridge port).
    pub port: String,
    pub mac: [u8; 6],
    pub ipv4: Option<Ipv4Addr>,
    pub ipv6: Option<Ipv6Addr>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct FwPort {
    /// None: every local address of the host (of the family of `target`).
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub proto: Proto,
    pub target: IpAddr,
    pub target_port: u16,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FwState {
    pub networks: Vec<FwNetwork>,
    pub endpoints: Vec<FwEndpoint>,
    pub ports: Vec<FwPort>,
}
