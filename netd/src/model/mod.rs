//! Plain data for networks, sandboxes and endpoints, with validation. No I/O here.

mod ipvlan;
mod macvlan;
mod names;
mod network;
mod network_match;
mod overlay;
mod parent;
mod port;
mod sandbox;
mod sandbox_request;
mod service;
mod vlan;

pub use ipvlan::{IPVLAN_FLAGS, IPVLAN_MODES};
pub use macvlan::MACVLAN_MODES;
pub use names::{
    bridge_name, fnv1a, host_veth_name, macvlan_tmp_name, validate_ifname, validate_name, vxlan_name,
    NameError,
};
pub use network::{
    option_is_true, OPT_BRIDGE_NAME, OPT_HAIRPIN, OPT_INHIBIT_IPV4, OPT_INHIBIT_IPV6, OPT_PARENT, OPT_PROMISC,
};
pub use network::{
    parse_cidr, Network, NetworkRequest, ParsedNetwork, ParsedSubnet, Subnet, SubnetRequest, DRIVER_IPVLAN,
    DRIVER_MACVLAN, OPT_IPVLAN_FLAG, OPT_IPVLAN_MODE, OPT_PARENT_IN_SANDBOX,
};
pub use overlay::{OverlayLink, DRIVER_OVERLAY};
pub use parent::{dummy_parent_name, vlan_parent};
pub use port::{parse_port_spec, parse_proto, PortMapping, PortSpecError, Proto};
pub use sandbox::{Endpoint, EndpointRequest, NetMode, Route, Sandbox, SandboxRequest};
pub use sandbox_request::{parse_expose, ParsedSandbox};
pub use service::{
    check_label, check_port_name, check_target, check_vip, parse_published, parse_selector, select_backends,
    service_key, Backend, ClusterIp, EndpointMode, EndpointSlice, KubePort, KubeSpec, KubeType, PublishMode,
    PublishedPort, Service, ServiceError, ServiceKind, ServicePort, ServiceRequest, SessionAffinity,
    SliceEndpoint, SlicePort, TargetPort, CLUSTER_WIDE, DEFAULT_AFFINITY_SECS, DEFAULT_NAMESPACE,
    MAX_AFFINITY_SECS, NODE_PORTS, SERVICE_NAME_LABEL,
};
pub use vlan::{
    format_vid_ranges, gateway_name, gateway_peer_name, merge_vid_ranges, parse_vid_ranges, VidRange,
    OPT_VLAN, OPT_VLAN_TRUNK, VLAN_BRIDGE_ALIAS,
};
