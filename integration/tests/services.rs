//! The service conformance suite (`integration::services_suite`) on the nftables
//! datapath, which this host's kernel has. IPVS runs the same scenarios in the VM lane
//! (`services_ipvs_suite.rs`).

use integration::services_suite::Datapath;

integration::services_scenarios!(nftables => super::Datapath::Nftables);
