//! VLAN networks (`-o vlan=N`): several may share one bridge, one VLAN each, so the
//! bridge is made by the first and deleted with the last; and the kernel must filter by
//! VLAN, which is asked before anything changes.

use super::{Engine, EngineError, Result};
use crate::model::{Network, ParsedNetwork, VLAN_BRIDGE_ALIAS};
use crate::plan::Step;

impl Engine {
    /// The bridge of a new VLAN network: free (as for any network), or shared only with
    /// VLAN networks on other VLANs. A kernel without bridge VLAN filtering is refused
    /// here, before any change.
    pub(super) fn check_vlan_bridge(&self, p: &ParsedNetwork) -> Result<()> {
        let others: Vec<&Network> = self.networks.values().filter(|n| n.bridge == p.bridge).collect();
        if others.is_empty() {
            self.check_bridge_free(&p.bridge)?;
            return self.require_vlan_filtering(&format!("vlan {}", p.vlan.unwrap_or_default()));
        }
        for o in others {
            match o.vlan {
                None => {
                    return Err(EngineError::Conflict(format!(
                        "bridge name {} is already used by network {} (without a VLAN)",
                        p.bridge, o.name
                    )))
                }
                Some(v) if Some(v) == p.vlan => {
                    return Err(EngineError::Conflict(format!(
                        "vlan {v} on bridge {} is already network {}",
                        p.bridge, o.name
                    )))
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The bridge of a new trunk network without a VLAN of its own (`vlan_trunk`): a
    /// free name, and a kernel that filters by VLAN.
    pub(super) fn check_trunk_bridge(&self, p: &ParsedNetwork) -> Result<()> {
        self.check_bridge_free(&p.bridge)?;
        self.require_vlan_filtering(&format!(
            "vlan trunk {}",
            crate::model::format_vid_ranges(&p.vlan_trunk)
        ))
    }

    /// Refuses `what` (code 2 for CNI) on a kernel without bridge VLAN filtering.
    fn require_vlan_filtering(&self, what: &str) -> Result<()> {
        let supported = self
            .kernel
            .bridge_vlan_filtering()
            .map_err(EngineError::kernel("probe bridge VLAN filtering"))?;
        if !supported {
            return Err(EngineError::Unsupported {
                what: what.into(),
                feature: "bridge VLAN filtering (CONFIG_BRIDGE_VLAN_FILTERING)",
            });
        }
        Ok(())
    }

    /// `steps` without the creation or deletion of `net`'s bridge when another network
    /// uses that bridge too: its undo (or the deletion) would take the other's ports.
    pub(super) fn keep_shared_bridge(&self, net: &Network, mut steps: Vec<Step>) -> Vec<Step> {
        let shared = net.vlan.is_some()
            && self
                .networks
                .values()
                .any(|n| n.name != net.name && n.bridge == net.bridge);
        if shared {
            steps.retain(|s| match s {
                Step::EnsureBridge(b) => b.name != net.bridge,
                Step::DeleteLink { name, netns: None } => *name != net.bridge,
                _ => true,
            });
        }
        steps
    }

    /// Whether host link `name` with `alias` is a bridge of VLAN networks still in use.
    pub(super) fn is_vlan_bridge(&self, name: &str, alias: &str) -> bool {
        alias == VLAN_BRIDGE_ALIAS
            && self
                .networks
                .values()
                .any(|n| n.vlan.is_some() && n.bridge == name)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::super::tests::{open_with, T};
    use super::*;
    use crate::kernel::fake::FakeKernel;
    use crate::model::{NetworkRequest, SandboxRequest, SubnetRequest};
    use crate::store::{Bucket, Store};

    fn setup(k: FakeKernel) -> T {
        let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
        open_with(
            Arc::new(k),
            std::env::temp_dir().join(format!("netd-vlan-test-{tag}")),
            std::env::temp_dir().join(format!("netd-vlan-test-etc-{tag}")),
        )
    }

    fn vnet(name: &str, subnet: &str, vlan: &str) -> NetworkRequest {
        NetworkRequest {
            name: name.into(),
            subnets: vec![SubnetRequest {
                subnet: Some(subnet.into()),
                ..Default::default()
            }],
            options: [
                ("vlan".to_string(), vlan.to_string()),
                ("com.docker.network.bridge.name".to_string(), "vbr".to_string()),
            ]
            .into(),
            ..Default::default()
        }
    }

    #[test]
    fn vlan_networks_share_a_bridge_which_goes_with_the_last() {
        let mut t = setup(FakeKernel::default());
        t.e.create_network(&vnet("v100", "10.100.0.0/24", "100")).unwrap();
        t.e.create_network(&vnet("v200", "10.200.0.0/24", "200")).unwrap();
        let s = t.e.create_sandbox(&SandboxRequest::on("a", &["v100"])).unwrap();
        let links = t.k.links();
        for l in ["vbr", "vbr.100", "vbr.200", s.endpoints[0].host_ifname.as_str()] {
            assert!(links.contains(l), "{l} in {links:?}");
        }
        // The second network did not create (nor would it undo) the bridge.
        let bridges = t.k.log().iter().filter(|l| *l == "ensure bridge vbr").count();
        assert_eq!(bridges, 1, "{:?}", t.k.log());
        assert!(t.k.log().iter().any(|l| l.contains("vlan 200 pvid untagged")));
        // The firewall sees each network's gateway link as its L3 interface.
        let fw: Vec<String> =
            t.e.desired_fw()
                .networks
                .iter()
                .map(|n| n.bridge.clone())
                .collect();
        assert_eq!(fw, vec!["vbr.100", "vbr.200"]);
        // Another network on that VLAN, or without one, is refused.
        let e =
            t.e.create_network(&vnet("again", "10.101.0.0/24", "100"))
                .unwrap_err();
        assert!(
            e.to_string()
                .contains("vlan 100 on bridge vbr is already network v100"),
            "{e}"
        );
        let mut plain = vnet("plain", "10.102.0.0/24", "0");
        plain.options.remove("vlan");
        let e = t.e.create_network(&plain).unwrap_err();
        assert!(e.to_string().contains("already used by network"), "{e}");
        // Reconcile keeps the shared bridge and both gateways.
        let r = t.e.reconcile().unwrap();
        assert!(r.removed.is_empty(), "{r:?}");

        t.e.remove_sandbox("a").unwrap();
        t.e.settle();
        t.e.remove_network("v100").unwrap();
        t.e.settle();
        let links = t.k.links();
        assert!(
            links.contains("vbr") && links.contains("vbr.200") && !links.contains("vbr.100"),
            "{links:?}"
        );
        t.e.remove_network("v200").unwrap();
        t.e.settle();
        assert!(t.k.links().is_empty(), "{:?}", t.k.links());
    }

    #[test]
    fn a_kernel_without_vlan_filtering_is_refused_before_any_change() {
        let k = FakeKernel::default();
        k.without_vlan_filtering();
        let mut t = setup(k);
        let log = t.k.log();
        let nft = t.k.nft_batches().len();
        let e =
            t.e.create_network(&vnet("v100", "10.100.0.0/24", "100"))
                .unwrap_err();
        assert!(matches!(e, EngineError::Unsupported { .. }), "{e:?}");
        assert!(e.to_string().contains("CONFIG_BRIDGE_VLAN_FILTERING"), "{e}");
        assert_eq!(t.k.log(), log);
        assert_eq!(t.k.nft_batches().len(), nft);
        assert!(t.k.links().is_empty());
        assert_eq!(t.e.networks().count(), 0);
        assert_eq!(t.e.pools().count(), 0);
        assert!(t.s.list(Bucket::Networks).unwrap().is_empty());
        assert!(t.s.list(Bucket::Pools).unwrap().is_empty());
        // Networks without a VLAN are unaffected.
        let mut plain = vnet("plain", "10.102.0.0/24", "0");
        plain.options.remove("vlan");
        t.e.create_network(&plain).unwrap();
    }
}
