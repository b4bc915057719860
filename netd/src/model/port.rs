//! Published ports: Docker's `-p [HOSTIP:][HOSTPORT:]PORT[/tcp|/udp]` syntax.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    Tcp,
    Udp,
}

impl fmt::Display for Proto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        })
    }
}

/// One published port. `host_port == 0` in a request means "pick one from the ephemeral
/// range"; a stored mapping always has the port that was picked.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Hash)]
pub struct PortMapping {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<IpAddr>,
    pub host_port: u16,
    pub container_port: u16,
    pub proto: Proto,
}

impl PortMapping {
    /// Two mappings clash when they use the same host port and protocol on addresses that
    /// overlap (no address means every address).
    pub fn clashes(&self, other: &PortMapping) -> bool {
        self.proto == other.proto
            && self.host_port == other.host_port
            && match (self.host_ip, other.host_ip) {
                (None, None) => true,
                (Some(a), Some(b)) => a == b,
                (Some(a), None) | (None, Some(a)) => a.is_ipv4(),
            }
    }
}

impl fmt::Display for PortMapping {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.host_ip {
            Some(IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => write!(f, "0.0.0.0:")?,
        }
        write!(f, "{}->{}/{}", self.host_port, self.container_port, self.proto)
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
#[error("invalid port spec {spec:?}: {why}")]
pub struct PortSpecError {
    pub spec: String,
    pub why: String,
}

fn port(spec: &str, s: &str, allow_zero: bool) -> Result<u16, PortSpecError> {
    let err = |why: &str| PortSpecError {
        spec: spec.into(),
        why: why.into(),
    };
    let p: u16 = s
        .parse()
        .map_err(|_| err(&format!("{s:?} is not a port number (1-65535)")))?;
    if p == 0 && !allow_zero {
        return Err(err("port 0 is not allowed"));
    }
    Ok(p)
}

pub fn parse_proto(spec: &str, s: &str) -> Result<Proto, PortSpecError> {
    match s.to_ascii_lowercase().as_str() {
        "tcp" => Ok(Proto::Tcp),
        "udp" => Ok(Proto::Udp),
        _ => Err(PortSpecError {
            spec: spec.into(),
            why: format!("protocol {s:?} is not tcp or udp"),
        }),
    }
}

/// Parses `PORT`, `HOSTPORT:PORT`, `HOSTIP:HOSTPORT:PORT`, `HOSTIP::PORT`, with an optional
/// `/tcp` or `/udp`, and `[v6addr]:HOSTPORT:PORT`.
pub fn parse_port_spec(spec: &str) -> Result<PortMapping, PortSpecError> {
    let err = |why: &str| PortSpecError {
        spec: spec.into(),
        why: why.into(),
    };
    let (body, proto) = match spec.rsplit_once('/') {
        Some((b, p)) => (b, parse_proto(spec, p)?),
        None => (spec, Proto::Tcp),
    };
    let (host_ip, rest) = if let Some(r) = body.strip_prefix('[') {
        let (ip, rest) = r
            .split_once("]:")
            .ok_or_else(|| err("unclosed '[' in IPv6 address"))?;
        let ip: IpAddr = ip
            .parse()
            .map_err(|_| err(&format!("{ip:?} is not an IP address")))?;
        (Some(ip), rest)
    } else {
        let parts: Vec<&str> = body.split(':').collect();
        match parts.len() {
            1 | 2 => (None, body),
            3 => {
                let ip: IpAddr = parts[0]
                    .parse()
                    .map_err(|_| err(&format!("{:?} is not an IP address", parts[0])))?;
                (Some(ip), &body[parts[0].len() + 1..])
            }
            _ => return Err(err("expected [HOSTIP:][HOSTPORT:]PORT[/PROTO]")),
        }
    };
    let (host_port, container_port) = match rest.split_once(':') {
        Some(("", c)) => (0, port(spec, c, false)?),
        Some((h, c)) => (port(spec, h, false)?, port(spec, c, false)?),
        None => (0, port(spec, rest, false)?),
    };
    Ok(PortMapping {
        host_ip,
        host_port,
        container_port,
        proto,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_docker_forms() {
        let p = parse_port_spec("8080:80").unwrap();
        assert_eq!(
            (p.host_ip, p.host_port, p.container_port, p.proto),
            (None, 8080, 80, Proto::Tcp)
        );
        let p = parse_port_spec("127.0.0.1:5353:53/udp").unwrap();
        assert_eq!(p.host_ip, Some("127.0.0.1".parse().unwrap()));
        assert_eq!((p.host_port, p.proto), (5353, Proto::Udp));
        let p = parse_port_spec("127.0.0.1::80").unwrap();
        assert_eq!(p.host_port, 0);
        let p = parse_port_spec("80").unwrap();
        assert_eq!((p.host_port, p.container_port), (0, 80));
        let p = parse_port_spec("[::1]:8080:80").unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "abc",
            "70000:80",
            "80:0",
            "1.2.3:80:80",
            "80/sctp",
            "1:2:3:4",
            "[::1:80:80",
        ] {
            assert!(parse_port_spec(s).is_err(), "{s}");
        }
    }

    #[test]
    fn clash_rules() {
        let a = parse_port_spec("8080:80").unwrap();
        let b = parse_port_spec("127.0.0.1:8080:81").unwrap();
        let c = parse_port_spec("8080:80/udp").unwrap();
        assert!(a.clashes(&b));
        assert!(!a.clashes(&c));
    }
}
