//! The service conformance suite (`integration::services_suite`) on the IPVS datapath
//! (`netd daemon --lb ipvs`). This kernel has no IP_VS: every test skips here with
//! `skip_for_lane` and runs in the VM lane (`scripts/vmlane-test.sh services_ipvs_suite`).

use integration::services_suite::Datapath;

integration::services_scenarios!(ipvs => super::Datapath::Ipvs);
