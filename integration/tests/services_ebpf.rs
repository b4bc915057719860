//! The service conformance suite (`integration::services_suite`) on the eBPF datapath
//! (`netd daemon --lb ebpf`): socket-level load balancing by cgroup programs, with the
//! nftables datapath kept for ingress ports (north-south) until the tc program exists.

use integration::services_suite::Datapath;

integration::services_scenarios!(ebpf => super::Datapath::Ebpf);
