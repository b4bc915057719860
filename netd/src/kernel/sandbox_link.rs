//! Repairs inside a sandbox: its interface brought back up with the addresses and
//! routes netd gave it (`Step::EnsureSandboxLink`), after someone removed one
//! (`ip -n SANDBOX route del default`). Only what is missing is added, so a healthy
//! interface is looked at and left alone.

use std::net::IpAddr;

use ipnetwork::IpNetwork;

use super::netlink::Netlink;
use super::{netns, KernelError};
use crate::plan::{Applied, SandboxSide};

/// `dst` with its host bits cleared, as the kernel lists a route.
fn net_of(dst: IpNetwork) -> IpNetwork {
    IpNetwork::new(dst.network(), dst.prefix()).unwrap_or(dst)
}

/// The routes `sb` calls for, as `(destination, gateway)`.
fn wanted_routes(sb: &SandboxSide) -> Vec<(IpNetwork, Option<IpAddr>)> {
    let default = |gw: IpAddr| {
        let any = match gw {
            IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        };
        IpNetwork::new(any, 0).map(|n| (n, Some(gw)))
    };
    sb.gw4
        .map(IpAddr::V4)
        .into_iter()
        .chain(sb.gw6.map(IpAddr::V6))
        .filter_map(|g| default(g).ok())
        .chain(sb.routes.iter().map(|r| (net_of(r.dst), r.gw)))
        .collect()
}

pub fn ensure(sb: &SandboxSide) -> Result<Applied, KernelError> {
    if !netns::is_alive(&sb.netns) {
        return Err(KernelError::Netns {
            path: sb.netns.clone(),
            msg: "not a live namespace".into(),
        });
    }
    let mut nl = Netlink::open_in(&sb.netns)?;
    let missing = |what: &str| KernelError::Netlink {
        op: format!("ensure {what} of {} in {}", sb.ifname, sb.netns.display()),
        errno: Some(nix::errno::Errno::ENODEV),
        msg: "no such interface".into(),
    };
    let link = nl.link(&sb.ifname)?.ok_or_else(|| missing("link"))?;
    let mut made = false;
    if !link.up {
        // Up before the routes: a gateway route on a down link is refused (ENETDOWN).
        nl.set_up(&sb.ifname)?;
        made = true;
    }
    let have = nl
        .interface_config(&sb.ifname)?
        .ok_or_else(|| missing("config"))?;
    for a in sb.addrs.iter().filter(|a| !have.addrs.contains(a)) {
        nl.add_address(link.index, *a)?;
        made = true;
    }
    // Removing an address also removes the routes through it: look again.
    let have = if made {
        nl.interface_config(&sb.ifname)?
            .ok_or_else(|| missing("config"))?
    } else {
        have
    };
    let routes: Vec<(IpNetwork, Option<IpAddr>)> =
        have.routes.iter().map(|(d, g)| (net_of(*d), *g)).collect();
    for (dst, gw) in wanted_routes(sb).into_iter().filter(|r| !routes.contains(r)) {
        nl.add_route(dst, gw, Some(link.index))?;
        made = true;
    }
    Ok(if made { Applied::Made } else { Applied::Found })
}
