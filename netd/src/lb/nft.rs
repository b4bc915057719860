//! The nftables datapath: the service chains and maps of `table inet netd`
//! (`firewall::ruleset::services`), sent through the `Kernel` as text batches, each
//! one transaction.
//!
//! `sync_diff` hands the kernel `services::diff`, whose size follows what changed.
//! `sync_full` rewrites every service object in one transaction (the same rules in the
//! same order: conntrack entries and affinity sets stay, and a packet sees the old or
//! the new objects, never a gap) and deletes the `svc/` chains and sets the state no
//! longer has, which only a listing of the kernel's table can name.

use std::sync::Arc;

use super::{LbKind, ServiceLb};
use crate::firewall::ruleset::services::{self, FwService};
use crate::firewall::TABLE;
use crate::kernel::{Kernel, KernelError};

pub struct NftLb {
    kernel: Arc<dyn Kernel>,
}

impl NftLb {
    pub fn new(kernel: Arc<dyn Kernel>) -> NftLb {
        NftLb { kernel }
    }
}

impl ServiceLb for NftLb {
    fn kind(&self) -> LbKind {
        LbKind::Nftables
    }

    fn sync_full(&self, services: &[FwService]) -> Result<(), KernelError> {
        let have = self.kernel.nft_objects("inet", TABLE)?;
        // A host that never had a service gets no service objects: its batches stay
        // what they were before services existed.
        if services.is_empty() {
            // None left: whatever service objects the kernel still holds go.
            let batch = services::teardown(&have.chains, &have.sets);
            return if batch.is_empty() {
                Ok(())
            } else {
                self.kernel.nft(&batch)
            };
        }
        self.kernel
            .nft(&services::full_over(services, &have.chains, &have.sets))
    }

    fn sync_diff(&self, old: &[FwService], new: &[FwService]) -> Result<(), KernelError> {
        // From no service, the base chains and maps may not exist yet (`sync_full` made
        // none on a host without services): `full` makes them with the new objects.
        let batch = if old.is_empty() && !new.is_empty() {
            services::full(new)
        } else {
            services::diff(old, new)
        };
        if batch.is_empty() {
            return Ok(());
        }
        self.kernel.nft(&batch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::firewall::ruleset::services::FwVip;
    use crate::kernel::fake::FakeKernel;
    use crate::model::Proto;

    fn web(backends: &[&str]) -> FwService {
        FwService {
            namespace: "default".into(),
            name: "web".into(),
            ports: vec![(80, 8080, Proto::Tcp)],
            affinity: None,
            vips: vec![FwVip {
                network: "n".into(),
                vip: "10.0.0.200".parse().unwrap(),
                backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
                bridge: "netd-n".into(),
            }],
            ingress: vec![],
        }
    }

    /// A diff with nothing to do sends nothing; a backend change sends only its objects.
    #[test]
    fn diff_sends_what_changed_and_nothing_else() {
        let k = Arc::new(FakeKernel::default());
        let lb = NftLb::new(k.clone());
        let (a, b) = (vec![web(&["10.0.0.2"])], vec![web(&["10.0.0.2", "10.0.0.3"])]);
        lb.sync_diff(&a, &a).unwrap();
        assert!(k.nft_batches().is_empty());
        lb.sync_diff(&a, &b).unwrap();
        let sent = k.nft_batches();
        assert_eq!(sent.len(), 1);
        assert!(
            sent[0].contains("add element inet netd svc/pick4/tcp/n2 { 10.0.0.200 . 80 . 0 : 10.0.0.2 . 8080, 10.0.0.200 . 80 . 1 : 10.0.0.3 . 8080 }"),
            "{}",
            sent[0]
        );
        assert!(!sent[0].contains("svc4_dispatch"), "{}", sent[0]);
        lb.sync_full(&b).unwrap();
        assert_eq!(k.nft_batches()[1], services::full(&b).to_string());
        // Nothing to hold and nothing held: no batch at all.
        let fresh = Arc::new(FakeKernel::default());
        NftLb::new(fresh.clone()).sync_full(&[]).unwrap();
        assert!(fresh.nft_batches().is_empty());
    }
}
