//! Delegating mode: every operation is one or two requests to a running netd, which owns
//! IPAM, the firewall and the kernel objects. The daemon serialises operations, so
//! concurrent plugin processes need no lock of their own.

use std::path::Path;

use netd::api::client::{Client, ClientError};
use netd::api::types::{Attached, ErrorReason};
use netd::ipam::Pool;
use netd::model::{Endpoint, EndpointRequest, Network, NetworkRequest, Sandbox, SandboxRequest};
use serde_json::{json, Value};

use super::{attach_in_steps, Attach, Created, Netd};
use crate::error::{code, from_client, CniError, Result};

pub struct Delegate {
    client: Client,
}

impl Delegate {
    pub fn new(socket: &Path) -> Delegate {
        Delegate {
            client: Client::new(socket),
        }
    }

    /// STATUS: can netd be reached at all?
    pub fn health(&self) -> Result<()> {
        self.client
            .get("/v1/health")
            .map(|_| ())
            .map_err(|e| CniError::new(code::UNAVAILABLE, format!("netd is not available: {e}")))
    }
}

fn decode<T: serde::de::DeserializeOwned>(v: Value) -> Result<T> {
    serde_json::from_value(v)
        .map_err(|e| CniError::new(code::IO, format!("unexpected answer from netd: {e}")))
}

fn not_found(e: &ClientError) -> bool {
    matches!(e, ClientError::Api { status: 404, .. })
}

/// netd refused because the object of that name exists.
fn exists(e: &ClientError, what: ErrorReason) -> bool {
    matches!(e, ClientError::Api { status: 409, reason: Some(r), .. } if *r == what)
}

/// A 409 without a reason: a netd from before reasons, whose answer cannot say which
/// conflict it is.
fn bare_conflict(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            status: 409,
            reason: None,
            ..
        }
    )
}

/// netd does not serve the path: it is older than the route. A netd from before
/// `/v1/attach` is also from before reasons, so its 404 carries none.
fn no_route(e: &ClientError) -> bool {
    matches!(
        e,
        ClientError::Api {
            status: 404,
            reason: None | Some(ErrorReason::NoSuchRoute),
            ..
        }
    )
}

impl Netd for Delegate {
    fn network(&mut self, name: &str) -> Result<Option<Network>> {
        match self.client.get(&format!("/v1/networks/{name}")) {
            Ok(v) => decode(v).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(from_client(e)),
        }
    }

    fn create_network(&mut self, req: &NetworkRequest) -> Result<Option<Network>> {
        let body = serde_json::to_value(req).map_err(|e| CniError::new(code::IO, e.to_string()))?;
        match self.client.post("/v1/networks", &body) {
            Ok(v) => decode(v).map(Some),
            // A netd from before reasons: any 409, as this plugin always read it (the
            // caller looks the network up next and says so if there is none).
            Err(e) if exists(&e, ErrorReason::NetworkExists) || bare_conflict(&e) => Ok(None),
            Err(e) => Err(from_client(e)),
        }
    }

    fn sandbox(&mut self, name: &str) -> Result<Option<Sandbox>> {
        match self.client.get(&format!("/v1/sandboxes/{name}")) {
            Ok(v) => decode(v).map(Some),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(from_client(e)),
        }
    }

    fn create_sandbox(&mut self, req: &SandboxRequest) -> Result<Created> {
        let body = serde_json::to_value(req).map_err(|e| CniError::new(code::IO, e.to_string()))?;
        match self.client.post("/v1/sandboxes", &body) {
            Ok(v) => decode(v).map(Created::Sandbox),
            Err(e) if not_found(&e) => Ok(Created::NoNetwork),
            Err(e) if exists(&e, ErrorReason::SandboxExists) => Ok(Created::Exists),
            // A netd from before reasons: whether the name is taken is asked, not read
            // from its message.
            Err(e) if bare_conflict(&e) && self.sandbox(&req.name)?.is_some() => Ok(Created::Exists),
            Err(e) => Err(from_client(e)),
        }
    }

    fn connect(&mut self, sandbox: &str, req: &EndpointRequest) -> Result<Endpoint> {
        let body = json!({
            "sandbox": sandbox,
            "ip": req.ip,
            "ip6": req.ip6,
            "aliases": req.aliases,
            "mac": req.mac,
            "ifname": req.ifname,
            "routes": req.routes,
            "no_default_route": req.no_default_route,
        });
        let path = format!("/v1/networks/{}/connect", req.network);
        decode(self.client.post(&path, &body).map_err(from_client)?)
    }

    fn disconnect(&mut self, sandbox: &str, network: &str) -> Result<()> {
        let path = format!("/v1/networks/{network}/disconnect");
        match self.client.post(&path, &json!({ "sandbox": sandbox })) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(from_client(e)),
        }
    }

    fn remove_sandbox(&mut self, name: &str) -> Result<()> {
        // netd does not wait for the host veth's deletion (RCU grace periods) when the
        // namespace is the runtime's.
        match self.client.delete(&format!("/v1/sandboxes/{name}")) {
            Ok(_) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(from_client(e)),
        }
    }

    fn attach(&mut self, net: &NetworkRequest, req: &SandboxRequest) -> Result<Attach> {
        let body = json!({ "network": net, "sandbox": req });
        match self.client.post("/v1/attach", &body) {
            Ok(v) => {
                let a: Attached = decode(v)?;
                Ok(Attach::Done(Box::new(a.network), a.sandbox))
            }
            Err(e) if exists(&e, ErrorReason::SandboxExists) => Ok(Attach::Exists),
            Err(e) if bare_conflict(&e) && self.sandbox(&req.name)?.is_some() => Ok(Attach::Exists),
            // A netd from before `/v1/attach`: the same in two requests.
            Err(e) if no_route(&e) => attach_in_steps(self, net, req),
            Err(e) => Err(from_client(e)),
        }
    }

    fn sandboxes(&mut self) -> Result<Vec<Sandbox>> {
        decode(self.client.get("/v1/sandboxes").map_err(from_client)?)
    }

    fn free_addresses(&mut self, network: &str) -> Result<Option<u128>> {
        let pools: Vec<Value> = decode(self.client.get("/v1/pools").map_err(from_client)?)?;
        for want in [format!("{network}/4"), format!("{network}/6")] {
            if let Some(p) = pools.iter().find(|p| p["key"] == want.as_str()) {
                let pool: Pool = decode(p["pool"].clone())?;
                return Ok(Some(pool.free_count()));
            }
        }
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, message: &str, reason: Option<ErrorReason>) -> ClientError {
        ClientError::Api {
            status,
            message: message.into(),
            reason,
        }
    }

    #[test]
    fn refusals_are_told_apart_by_reason_not_by_words() {
        let taken = api(
            409,
            "sandbox with name x already exists",
            Some(ErrorReason::SandboxExists),
        );
        assert!(exists(&taken, ErrorReason::SandboxExists));
        assert!(!exists(&taken, ErrorReason::NetworkExists));
        // The same words with another reason (or none) are not a taken name.
        let other = api(
            409,
            "sandbox with name x already exists",
            Some(ErrorReason::Conflict),
        );
        assert!(!exists(&other, ErrorReason::SandboxExists));
        assert!(!exists(&api(409, "x", None), ErrorReason::SandboxExists));
        let overlap = api(409, "subnet overlaps", Some(ErrorReason::Ipam));
        assert!(
            !exists(&overlap, ErrorReason::NetworkExists),
            "an overlap is an error"
        );
        // A netd without the route answers 404 with no reason (or, newer, no_such_route).
        assert!(no_route(&api(404, "no such API endpoint", None)));
        assert!(no_route(&api(404, "anything", Some(ErrorReason::NoSuchRoute))));
        assert!(!no_route(&api(
            404,
            "no such API endpoint",
            Some(ErrorReason::NoSuchNetwork)
        )));
        // A netd from before reasons is asked whether the sandbox exists instead.
        assert!(bare_conflict(&api(409, "anything", None)));
        assert!(!bare_conflict(&taken));
    }
}
