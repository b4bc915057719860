//! What the CNI operations need from netd, with two implementations: `delegate` (a
//! running daemon over its API socket) and `standalone` (netd's engine in this process,
//! under a lock on the plugin's own state dir). The CNI logic in `ops` is shared, so both
//! modes give the same results.

pub mod delegate;
pub mod standalone;

use netd::model::{Endpoint, EndpointRequest, Network, NetworkRequest, Sandbox, SandboxRequest};

use crate::error::{code, CniError, Result};

/// What a sandbox creation gave: the two refusals the ADD path handles itself are told
/// apart from the rest (which are errors).
pub enum Created {
    Sandbox(Sandbox),
    /// The network does not exist (yet).
    NoNetwork,
    /// A sandbox of that name exists.
    Exists,
}

/// What an attach (network ensured, then sandbox created) gave.
pub enum Attach {
    Done(Box<Network>, Sandbox),
    /// A sandbox of that name exists (the caller sorts out which case it is).
    Exists,
}

/// `attach` as separate steps: look up (or create) the network, then create the sandbox.
pub fn attach_in_steps(b: &mut dyn Netd, net: &NetworkRequest, req: &SandboxRequest) -> Result<Attach> {
    let n = crate::ops::ensure_network(b, net)?;
    match b.create_sandbox(req)? {
        Created::Sandbox(sb) => Ok(Attach::Done(Box::new(n), sb)),
        Created::Exists => Ok(Attach::Exists),
        Created::NoNetwork => Err(CniError::new(
            code::TRY_AGAIN_LATER,
            format!("network {} was removed during ADD", net.name),
        )),
    }
}

pub trait Netd {
    fn network(&mut self, name: &str) -> Result<Option<Network>>;
    /// Creates a network; `Ok(None)` when another caller created it first.
    fn create_network(&mut self, req: &NetworkRequest) -> Result<Option<Network>>;
    fn sandbox(&mut self, name: &str) -> Result<Option<Sandbox>>;
    fn create_sandbox(&mut self, req: &SandboxRequest) -> Result<Created>;
    /// Adds an endpoint on `network` to an existing sandbox.
    fn connect(&mut self, sandbox: &str, req: &EndpointRequest) -> Result<Endpoint>;
    /// Removes one endpoint; a missing one is success.
    fn disconnect(&mut self, sandbox: &str, network: &str) -> Result<()>;
    /// Removes a sandbox and releases its addresses; a missing one is success.
    fn remove_sandbox(&mut self, name: &str) -> Result<()>;
    fn sandboxes(&mut self) -> Result<Vec<Sandbox>>;
    /// The sandbox on the network `net` describes, created first if missing (a network
    /// that exists but differs is a config error). One request in delegating mode.
    fn attach(&mut self, net: &NetworkRequest, req: &SandboxRequest) -> Result<Attach>;
    /// Free dynamic IPv4 (else IPv6) addresses of a network's pool; None without a pool.
    fn free_addresses(&mut self, network: &str) -> Result<Option<u128>>;
}
