//! Plain data for networks, sandboxes and endpoints, with validation. No I/O here.

mod names;
mod network;
mod port;
mod sandbox;

pub use names::{bridge_name, fnv1a, host_veth_name, validate_ifname, validate_name, NameError};
pub use network::OPT_BRIDGE_NAME;
pub use network::{parse_cidr, Network, NetworkRequest, ParsedNetwork, ParsedSubnet, Subnet, SubnetRequest};
pub use port::{parse_port_spec, parse_proto, PortMapping, PortSpecError, Proto};
pub use sandbox::{Endpoint, EndpointRequest, NetMode, Sandbox, SandboxRequest};
