//! Overlay networks as a node holds them: a bridge network whose bridge also has a VXLAN
//! port. The cluster agent makes them from the cluster store's records and writes the
//! VXLAN parameters into the network's options (`OPT_VNI`, `OPT_LOCAL`, `OPT_PORT`),
//! so the engine, reconcile and the store treat them as the bridges they otherwise are.
//! A user cannot make one locally: without those options, `-d overlay` is refused.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use super::network::Network;

pub const DRIVER_OVERLAY: &str = "overlay";
pub const OPT_VNI: &str = "netd.overlay.vni";
pub const OPT_LOCAL: &str = "netd.overlay.local";
pub const OPT_PORT: &str = "netd.overlay.port";

/// The VXLAN side of an overlay network on this node.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OverlayLink {
    pub vni: u32,
    /// This node's underlay address (`--advertise-addr`), the tunnels' source.
    pub local: Ipv4Addr,
    pub port: u16,
}

impl OverlayLink {
    pub fn to_options(self, opts: &mut BTreeMap<String, String>) {
        opts.insert(OPT_VNI.into(), self.vni.to_string());
        opts.insert(OPT_LOCAL.into(), self.local.to_string());
        opts.insert(OPT_PORT.into(), self.port.to_string());
    }
}

/// Reads and checks the overlay options of a request for the overlay driver.
pub fn parse_options(opts: &BTreeMap<String, String>) -> Result<OverlayLink, String> {
    let (Some(vni), Some(local)) = (opts.get(OPT_VNI), opts.get(OPT_LOCAL)) else {
        return Err(
            "overlay networks live in the cluster store: start netd with --cluster etcd://HOST:PORT --node NAME --advertise-addr IP"
                .into(),
        );
    };
    let vni: u32 = vni
        .parse()
        .ok()
        .filter(|v| (1..(1 << 24)).contains(v))
        .ok_or_else(|| format!("option {OPT_VNI}={vni}: expected a VNI in 1..16777215"))?;
    let local: Ipv4Addr = local
        .parse()
        .map_err(|_| format!("option {OPT_LOCAL}={local}: expected an IPv4 address"))?;
    let port: u16 = match opts.get(OPT_PORT) {
        Some(p) => p
            .parse()
            .ok()
            .filter(|p| *p != 0)
            .ok_or_else(|| format!("option {OPT_PORT}={p}: expected a UDP port"))?,
        None => 4789,
    };
    Ok(OverlayLink { vni, local, port })
}

impl Network {
    pub fn is_overlay(&self) -> bool {
        self.driver == DRIVER_OVERLAY
    }
    /// The VXLAN side of an overlay network (`None` for others).
    pub fn overlay(&self) -> Option<OverlayLink> {
        if !self.is_overlay() {
            return None;
        }
        parse_options(&self.options).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlay_options_roundtrip_and_refuse_a_local_overlay() {
        let l = OverlayLink {
            vni: 4097,
            local: Ipv4Addr::new(10, 1, 0, 2),
            port: 4789,
        };
        let mut o = BTreeMap::new();
        l.to_options(&mut o);
        assert_eq!(parse_options(&o), Ok(l));
        let e = parse_options(&BTreeMap::new()).unwrap_err();
        assert!(e.contains("--cluster"), "{e}");
        o.insert(OPT_VNI.into(), "0".into());
        assert!(parse_options(&o).is_err());
        o.insert(OPT_VNI.into(), "16777216".into());
        assert!(parse_options(&o).is_err());
    }
}
