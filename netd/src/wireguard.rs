//! `netd wireguard`: one userspace WireGuard device (`kernel::wg_user`) in the
//! foreground, configured from the command line, removed on SIGTERM or SIGINT. For tests
//! and the benchmark; the daemon drives `UserWg` itself. Every argument is checked
//! before anything is created.

use std::net::SocketAddrV4;
use std::path::PathBuf;

use anyhow::{bail, Context};
use ipnetwork::Ipv4Network;
use nix::sys::signal::{SigSet, Signal};

use crate::kernel::netlink::MAX_IFNAME;
use crate::kernel::wg_user::{key_from_base64, UserWg, WgConfig, WgPeer};

pub struct Args {
    pub name: String,
    pub private_key_file: PathBuf,
    pub listen_port: u16,
    pub mtu: u32,
    pub address: Option<Ipv4Network>,
    /// `PUBKEY,ENDPOINT_IP:PORT,CIDR[+CIDR…]`, as typed.
    pub peers: Vec<String>,
}

/// Parses `PUBKEY_BASE64,ENDPOINT_IP:PORT,ALLOWED_CIDR[+CIDR…]`; an empty endpoint
/// (`KEY,,CIDR`) means "learn it from the peer's packets".
pub fn parse_peer(spec: &str) -> Result<WgPeer, String> {
    let parts: Vec<&str> = spec.split(',').collect();
    let [key, endpoint, allowed] = parts[..] else {
        return Err(format!(
            "peer {spec:?}: want PUBKEY,ENDPOINT_IP:PORT,CIDR[+CIDR...]"
        ));
    };
    let public_key =
        key_from_base64(key).ok_or_else(|| format!("peer {spec:?}: public key is not 32 bytes of base64"))?;
    let endpoint = match endpoint {
        "" => None,
        e => Some(
            e.parse::<SocketAddrV4>()
                .map_err(|_| format!("peer {spec:?}: endpoint {e:?} is not IPv4:PORT"))?,
        ),
    };
    let allowed_ips = allowed
        .split('+')
        .map(|c| {
            c.parse::<Ipv4Network>()
                .map_err(|_| format!("peer {spec:?}: allowed IPs {c:?} is not an IPv4 CIDR"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(WgPeer {
        public_key,
        endpoint,
        allowed_ips,
        keepalive: None,
    })
}

/// Runs the device until SIGTERM or SIGINT, then removes its link.
pub fn run(a: &Args) -> anyhow::Result<()> {
    if a.name.is_empty() || a.name.len() > MAX_IFNAME || a.name.contains(['/', ' ']) {
        bail!(
            "interface name {:?}: 1 to {MAX_IFNAME} bytes, no '/' or space",
            a.name
        );
    }
    let text = std::fs::read_to_string(&a.private_key_file)
        .with_context(|| format!("read private key {}", a.private_key_file.display()))?;
    let private_key = key_from_base64(&text).with_context(|| {
        format!(
            "private key {}: not 32 bytes of base64",
            a.private_key_file.display()
        )
    })?;
    let peers = a
        .peers
        .iter()
        .map(|s| parse_peer(s))
        .collect::<Result<Vec<_>, _>>()
        .map_err(anyhow::Error::msg)?;
    // Blocked before the device's threads start, so they inherit the mask and the
    // signals wait for `sigwait` here.
    let mut signals = SigSet::empty();
    signals.add(Signal::SIGTERM);
    signals.add(Signal::SIGINT);
    signals.thread_block()?;
    let wg = UserWg::start(WgConfig {
        name: a.name.clone(),
        private_key,
        listen_port: a.listen_port,
        mtu: a.mtu,
        fwmark: 0,
    })?;
    if let Some(net) = a.address {
        wg.add_address(net)?;
    }
    wg.set_peers(&peers)?;
    tracing::info!(link = %a.name, port = wg.listen_port(), peers = peers.len(), "wireguard up");
    signals.wait()?;
    drop(wg);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "HIgo9xNzJMWLKASShiTqIybxZ0U3wGLiUeJ1PKf8ykw=";

    #[test]
    fn peer_specs() {
        let p = parse_peer(&format!("{KEY},192.0.2.1:51820,10.0.0.0/24+10.1.0.1/32")).unwrap();
        assert_eq!(p.endpoint, Some("192.0.2.1:51820".parse().unwrap()));
        assert_eq!(p.allowed_ips.len(), 2);
        assert_eq!(parse_peer(&format!("{KEY},,10.0.0.0/24")).unwrap().endpoint, None);
        for bad in [
            format!("{KEY},192.0.2.1:51820"),
            "AAAA,192.0.2.1:1,10.0.0.0/24".to_string(),
            format!("{KEY},192.0.2.1,10.0.0.0/24"),
            format!("{KEY},192.0.2.1:1,10.0.0.0/33"),
            format!("{KEY},192.0.2.1:1,fd00::/64"),
        ] {
            assert!(parse_peer(&bad).is_err(), "{bad}");
        }
    }
}
