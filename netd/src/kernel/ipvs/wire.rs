//! The IPVS generic netlink wire format: the numbers of the kernel's
//! `include/uapi/linux/ip_vs.h`, the message type `netlink-packet-generic` sends, and
//! pure encoders/decoders between `Service`/`Dest` and nested attributes, unit-tested
//! byte for byte without a kernel.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use netlink_packet_core::{
    DecodeError, Emitable, Nla, NlasIterator, ParseableParametrized, NLA_F_NESTED, NLA_HEADER_SIZE,
    NLA_TYPE_MASK,
};
use netlink_packet_generic::{GenlFamily, GenlHeader};

use super::{Dest, Forward, Protocol, Service, ServiceKey};

// --- include/uapi/linux/ip_vs.h: every IPVS number in one place (uapi numbers never change).
pub const GENL_NAME: &str = "IPVS";
pub const GENL_VERSION: u8 = 1;

// enum IPVS_CMD_*
pub const CMD_NEW_SERVICE: u8 = 1;
pub const CMD_SET_SERVICE: u8 = 2;
pub const CMD_DEL_SERVICE: u8 = 3;
pub const CMD_GET_SERVICE: u8 = 4;
pub const CMD_NEW_DEST: u8 = 5;
pub const CMD_SET_DEST: u8 = 6;
pub const CMD_DEL_DEST: u8 = 7;
pub const CMD_GET_DEST: u8 = 8;

// enum IPVS_CMD_ATTR_*: the top level, each a nested service or destination.
pub const CMD_ATTR_SERVICE: u16 = 1;
pub const CMD_ATTR_DEST: u16 = 2;

// enum IPVS_SVC_ATTR_*
const SVC_ATTR_AF: u16 = 1;
const SVC_ATTR_PROTOCOL: u16 = 2;
const SVC_ATTR_ADDR: u16 = 3;
const SVC_ATTR_PORT: u16 = 4;
const SVC_ATTR_FWMARK: u16 = 5;
const SVC_ATTR_SCHED_NAME: u16 = 6;
const SVC_ATTR_FLAGS: u16 = 7;
const SVC_ATTR_TIMEOUT: u16 = 8;
const SVC_ATTR_NETMASK: u16 = 9;

// enum IPVS_DEST_ATTR_*
const DEST_ATTR_ADDR: u16 = 1;
const DEST_ATTR_PORT: u16 = 2;
const DEST_ATTR_FWD_METHOD: u16 = 3;
const DEST_ATTR_WEIGHT: u16 = 4;
const DEST_ATTR_U_THRESH: u16 = 5;
const DEST_ATTR_L_THRESH: u16 = 6;
const DEST_ATTR_ACTIVE_CONNS: u16 = 7;
const DEST_ATTR_INACT_CONNS: u16 = 8;
const DEST_ATTR_ADDR_FAMILY: u16 = 11;

// IP_VS_CONN_F_*: the forwarding method, the low 3 bits of IPVS_DEST_ATTR_FWD_METHOD.
const CONN_F_FWD_MASK: u32 = 0x7;
const CONN_F_MASQ: u32 = 0;
const CONN_F_LOCALNODE: u32 = 1;
const CONN_F_TUNNEL: u32 = 2;
const CONN_F_DROUTE: u32 = 3;

// IP_VS_SVC_F_*
pub const SVC_F_PERSISTENT: u32 = 0x1;
/// Set by the kernel on every service it has hashed; never ours to set or clear.
const SVC_F_HASHED: u32 = 0x2;
/// IP_VS_SCHEDNAME_MAXLEN (16) less the NUL.
pub const SCHED_NAME_MAX: usize = 15;

// linux/socket.h, linux/in.h
const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const IPPROTO_TCP: u16 = 6;
const IPPROTO_UDP: u16 = 17;
const IPPROTO_SCTP: u16 = 132;

/// One netlink attribute: a value, or nested attributes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Attr {
    Value(u16, Vec<u8>),
    Nested(u16, Vec<Attr>),
}

impl Nla for Attr {
    fn value_len(&self) -> usize {
        match self {
            Attr::Value(_, v) => v.len(),
            Attr::Nested(_, a) => a.as_slice().buffer_len(),
        }
    }
    fn kind(&self) -> u16 {
        match self {
            Attr::Value(k, _) => *k,
            Attr::Nested(k, _) => *k | NLA_F_NESTED,
        }
    }
    fn emit_value(&self, buffer: &mut [u8]) {
        match self {
            Attr::Value(_, v) => buffer.copy_from_slice(v),
            Attr::Nested(_, a) => a.as_slice().emit(buffer),
        }
    }
}

/// An IPVS request or reply: the command and its top-level attributes (replies keep
/// them as raw values; `service_of`/`dest_of` decode the nested ones).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpvsMsg {
    pub cmd: u8,
    pub attrs: Vec<Attr>,
}

impl GenlFamily for IpvsMsg {
    fn family_name() -> &'static str {
        GENL_NAME
    }
    // family_id stays 0: the id is dynamic, resolved once per client.
    fn command(&self) -> u8 {
        self.cmd
    }
    fn version(&self) -> u8 {
        GENL_VERSION
    }
}

impl Emitable for IpvsMsg {
    fn buffer_len(&self) -> usize {
        self.attrs.as_slice().buffer_len()
    }
    fn emit(&self, buffer: &mut [u8]) {
        self.attrs.as_slice().emit(buffer)
    }
}

impl ParseableParametrized<[u8], GenlHeader> for IpvsMsg {
    fn parse_with_param(buf: &[u8], header: GenlHeader) -> Result<Self, DecodeError> {
        let attrs = NlasIterator::new(buf)
            .map(|a| a.map(|a| Attr::Value(a.kind() & NLA_TYPE_MASK, a.value().to_vec())))
            .collect::<Result<_, _>>()?;
        Ok(IpvsMsg {
            cmd: header.cmd,
            attrs,
        })
    }
}

impl IpvsMsg {
    /// The value of top-level attribute `kind`, if present.
    pub fn attr(&self, kind: u16) -> Option<&[u8]> {
        self.attrs.iter().find_map(|a| match a {
            Attr::Value(k, v) if *k == kind => Some(v.as_slice()),
            _ => None,
        })
    }
}

fn u16_ne(k: u16, v: u16) -> Attr {
    Attr::Value(k, v.to_ne_bytes().to_vec())
}
fn u32_ne(k: u16, v: u32) -> Attr {
    Attr::Value(k, v.to_ne_bytes().to_vec())
}
/// Ports travel in network byte order although the policy says NLA_U16 (ipvsadm does the same).
fn port_be(k: u16, port: u16) -> Attr {
    Attr::Value(k, port.to_be_bytes().to_vec())
}
fn addr(k: u16, ip: IpAddr) -> Attr {
    // The kernel nla_memcpy()s into a 16-byte union nf_inet_addr and zero-fills the rest,
    // so an IPv4 address is sent as its 4 bytes.
    match ip {
        IpAddr::V4(a) => Attr::Value(k, a.octets().to_vec()),
        IpAddr::V6(a) => Attr::Value(k, a.octets().to_vec()),
    }
}
fn af_of(ipv6: bool) -> u16 {
    if ipv6 {
        AF_INET6
    } else {
        AF_INET
    }
}

impl Protocol {
    fn number(self) -> u16 {
        match self {
            Protocol::Tcp => IPPROTO_TCP,
            Protocol::Udp => IPPROTO_UDP,
            Protocol::Sctp => IPPROTO_SCTP,
        }
    }
}

impl Forward {
    fn number(self) -> u32 {
        match self {
            Forward::Masquerade => CONN_F_MASQ,
            Forward::Local => CONN_F_LOCALNODE,
            Forward::Tunnel => CONN_F_TUNNEL,
            Forward::DirectRoute => CONN_F_DROUTE,
        }
    }
}

/// The attributes that name a service (what DEL_SERVICE and the destination commands
/// need): the family and either protocol, address and port, or the fwmark.
fn key_attrs(key: &ServiceKey) -> Vec<Attr> {
    match *key {
        ServiceKey::Addr { protocol, vip } => vec![
            u16_ne(SVC_ATTR_AF, af_of(vip.is_ipv6())),
            u16_ne(SVC_ATTR_PROTOCOL, protocol.number()),
            addr(SVC_ATTR_ADDR, vip.ip()),
            port_be(SVC_ATTR_PORT, vip.port()),
        ],
        ServiceKey::Fwmark { mark, ipv6 } => {
            vec![u16_ne(SVC_ATTR_AF, af_of(ipv6)), u32_ne(SVC_ATTR_FWMARK, mark)]
        }
    }
}

/// IPVS_CMD_ATTR_SERVICE naming `key` only.
pub fn service_key(key: &ServiceKey) -> Attr {
    Attr::Nested(CMD_ATTR_SERVICE, key_attrs(key))
}

/// IPVS_CMD_ATTR_SERVICE with every field NEW/SET_SERVICE require (the kernel refuses a
/// "full entry" without scheduler, flags, timeout and netmask).
pub fn service_full(s: &Service) -> Attr {
    let mut a = key_attrs(&s.key);
    a.push(Attr::Value(SVC_ATTR_SCHED_NAME, nul_terminated(&s.scheduler)));
    // struct ip_vs_flags { flags, mask }: the mask says which flags to set; all but HASHED.
    let mut flags = s.flags.to_ne_bytes().to_vec();
    flags.extend_from_slice(&(!SVC_F_HASHED).to_ne_bytes());
    a.push(Attr::Value(SVC_ATTR_FLAGS, flags));
    a.push(u32_ne(SVC_ATTR_TIMEOUT, s.timeout));
    // Persistence granularity: one client address (a /32 mask for IPv4, a prefix length
    // of 128 for IPv6, as ipvsadm sends them).
    let netmask = if s.key.is_ipv6() { 128 } else { u32::MAX };
    a.push(u32_ne(SVC_ATTR_NETMASK, netmask));
    Attr::Nested(CMD_ATTR_SERVICE, a)
}

/// IPVS_CMD_ATTR_DEST; `full` adds what NEW/SET_DEST require (method, weight, thresholds).
pub fn dest_attr(d: &Dest, full: bool) -> Attr {
    let mut a = vec![
        addr(DEST_ATTR_ADDR, d.addr.ip()),
        port_be(DEST_ATTR_PORT, d.addr.port()),
        // Without it the kernel takes the service's family (no IPv4 backend of an IPv6 VIP).
        u16_ne(DEST_ATTR_ADDR_FAMILY, af_of(d.addr.is_ipv6())),
    ];
    if full {
        a.push(u32_ne(DEST_ATTR_FWD_METHOD, d.forward.number()));
        a.push(u32_ne(DEST_ATTR_WEIGHT, d.weight));
        a.push(u32_ne(DEST_ATTR_U_THRESH, d.upper_threshold));
        a.push(u32_ne(DEST_ATTR_L_THRESH, d.lower_threshold));
    }
    Attr::Nested(CMD_ATTR_DEST, a)
}

fn nul_terminated(s: &str) -> Vec<u8> {
    let mut v = s.as_bytes().to_vec();
    v.push(0);
    v
}

fn get<const N: usize>(v: &[u8], what: &str) -> Result<[u8; N], DecodeError> {
    v.get(..N)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| DecodeError::from(format!("{what}: {} bytes, want {N}", v.len())))
}

fn ip_of(af: u16, v: &[u8]) -> Result<IpAddr, DecodeError> {
    Ok(if af == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(get::<16>(v, "IPv6 address")?))
    } else {
        IpAddr::V4(Ipv4Addr::from(get::<4>(v, "IPv4 address")?))
    })
}

/// The (type, value) pairs of a nested attribute's payload.
fn fields(v: &[u8]) -> Result<Vec<(u16, &[u8])>, DecodeError> {
    NlasIterator::new(v)
        .map(|a| {
            a.map(|a| {
                let (kind, len) = (a.kind() & NLA_TYPE_MASK, usize::from(a.length()));
                // The value borrows from `v`, not from the iterator's buffer view.
                let whole: &[u8] = a.into_inner();
                (kind, &whole[NLA_HEADER_SIZE..len])
            })
        })
        .collect()
}

/// Decodes the payload of an IPVS_CMD_ATTR_SERVICE (a GET_SERVICE reply).
pub fn service_of(v: &[u8]) -> Result<Service, DecodeError> {
    let f = fields(v)?;
    let find = |k: u16| f.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    let af = u16::from_ne_bytes(get(find(SVC_ATTR_AF).unwrap_or_default(), "service family")?);
    let key = if let Some(m) = find(SVC_ATTR_FWMARK) {
        ServiceKey::Fwmark {
            mark: u32::from_ne_bytes(get(m, "fwmark")?),
            ipv6: af == AF_INET6,
        }
    } else {
        let proto = u16::from_ne_bytes(get(find(SVC_ATTR_PROTOCOL).unwrap_or_default(), "protocol")?);
        let protocol = match proto {
            IPPROTO_TCP => Protocol::Tcp,
            IPPROTO_UDP => Protocol::Udp,
            IPPROTO_SCTP => Protocol::Sctp,
            p => return Err(DecodeError::from(format!("service protocol {p}"))),
        };
        let ip = ip_of(af, find(SVC_ATTR_ADDR).unwrap_or_default())?;
        let port = u16::from_be_bytes(get(find(SVC_ATTR_PORT).unwrap_or_default(), "port")?);
        ServiceKey::Addr {
            protocol,
            vip: SocketAddr::new(ip, port),
        }
    };
    let sched = find(SVC_ATTR_SCHED_NAME).unwrap_or_default();
    let sched = sched.split(|b| *b == 0).next().unwrap_or_default();
    let flags = match find(SVC_ATTR_FLAGS) {
        Some(v) => u32::from_ne_bytes(get(v, "flags")?) & !SVC_F_HASHED,
        None => 0,
    };
    let timeout = match find(SVC_ATTR_TIMEOUT) {
        Some(v) => u32::from_ne_bytes(get(v, "timeout")?),
        None => 0,
    };
    Ok(Service {
        key,
        scheduler: String::from_utf8_lossy(sched).into_owned(),
        flags,
        timeout,
    })
}

/// Decodes the payload of an IPVS_CMD_ATTR_DEST (a GET_DEST reply).
pub fn dest_of(v: &[u8]) -> Result<Dest, DecodeError> {
    let f = fields(v)?;
    let find = |k: u16| f.iter().find(|(t, _)| *t == k).map(|(_, v)| *v);
    let num = |k: u16, what: &str| -> Result<u32, DecodeError> {
        find(k).map_or(Ok(0), |v| get(v, what).map(u32::from_ne_bytes))
    };
    // Older kernels send no destination family: the address length tells.
    let a = find(DEST_ATTR_ADDR).unwrap_or_default();
    let af = match find(DEST_ATTR_ADDR_FAMILY) {
        Some(v) => u16::from_ne_bytes(get(v, "destination family")?),
        None if a.len() == 4 => AF_INET,
        None => AF_INET6,
    };
    let ip = ip_of(af, a)?;
    let port = u16::from_be_bytes(get(find(DEST_ATTR_PORT).unwrap_or_default(), "port")?);
    let forward = match num(DEST_ATTR_FWD_METHOD, "forwarding method")? & CONN_F_FWD_MASK {
        CONN_F_MASQ => Forward::Masquerade,
        CONN_F_LOCALNODE => Forward::Local,
        CONN_F_TUNNEL => Forward::Tunnel,
        CONN_F_DROUTE => Forward::DirectRoute,
        m => return Err(DecodeError::from(format!("forwarding method {m}"))),
    };
    Ok(Dest {
        addr: SocketAddr::new(ip, port),
        weight: num(DEST_ATTR_WEIGHT, "weight")?,
        forward,
        upper_threshold: num(DEST_ATTR_U_THRESH, "upper threshold")?,
        lower_threshold: num(DEST_ATTR_L_THRESH, "lower threshold")?,
        active_conns: num(DEST_ATTR_ACTIVE_CONNS, "active connections")?,
        inactive_conns: num(DEST_ATTR_INACT_CONNS, "inactive connections")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(a: &Attr) -> Vec<u8> {
        let mut b = vec![0u8; a.buffer_len()];
        a.emit(&mut b);
        b
    }

    /// `len, type` of an attribute header in native order.
    fn hdr(len: u16, kind: u16) -> Vec<u8> {
        [len.to_ne_bytes(), kind.to_ne_bytes()].concat()
    }

    #[test]
    fn a_tcp_service_key_is_family_protocol_address_and_big_endian_port() {
        let key = ServiceKey::tcp("10.1.2.3:80".parse().unwrap());
        let want = [
            hdr(4 + 4 * 8, CMD_ATTR_SERVICE | NLA_F_NESTED),
            hdr(6, SVC_ATTR_AF),
            2u16.to_ne_bytes().to_vec(),
            vec![0, 0],
            hdr(6, SVC_ATTR_PROTOCOL),
            6u16.to_ne_bytes().to_vec(),
            vec![0, 0],
            hdr(8, SVC_ATTR_ADDR),
            vec![10, 1, 2, 3],
            hdr(6, SVC_ATTR_PORT),
            vec![0, 80, 0, 0],
        ]
        .concat();
        assert_eq!(bytes(&service_key(&key)), want);
    }

    #[test]
    fn a_full_service_carries_scheduler_flags_mask_timeout_and_netmask() {
        let s = Service::new(ServiceKey::fwmark(7))
            .scheduler("sh")
            .persistent(300);
        let b = bytes(&service_full(&s));
        let tail = [
            hdr(6, SVC_ATTR_AF),
            2u16.to_ne_bytes().to_vec(),
            vec![0, 0],
            hdr(8, SVC_ATTR_FWMARK),
            7u32.to_ne_bytes().to_vec(),
            hdr(7, SVC_ATTR_SCHED_NAME),
            b"sh\0\0".to_vec(),
            hdr(12, SVC_ATTR_FLAGS),
            SVC_F_PERSISTENT.to_ne_bytes().to_vec(),
            (!SVC_F_HASHED).to_ne_bytes().to_vec(),
            hdr(8, SVC_ATTR_TIMEOUT),
            300u32.to_ne_bytes().to_vec(),
            hdr(8, SVC_ATTR_NETMASK),
            vec![0xff; 4],
        ]
        .concat();
        assert_eq!(&b[4..], &tail[..]);
        assert_eq!(usize::from(u16::from_ne_bytes([b[0], b[1]])), b.len());
    }

    #[test]
    fn a_full_destination_is_address_port_family_method_weight_thresholds() {
        let d = Dest::masquerade("[fd00::2]:8080".parse().unwrap(), 5);
        let b = bytes(&dest_attr(&d, true));
        let want = [
            hdr(4 + 20 + 8 + 8 + 4 * 8, CMD_ATTR_DEST | NLA_F_NESTED),
            hdr(20, DEST_ATTR_ADDR),
            "fd00::2".parse::<Ipv6Addr>().unwrap().octets().to_vec(),
            hdr(6, DEST_ATTR_PORT),
            vec![0x1f, 0x90, 0, 0],
            hdr(6, DEST_ATTR_ADDR_FAMILY),
            10u16.to_ne_bytes().to_vec(),
            vec![0, 0],
            hdr(8, DEST_ATTR_FWD_METHOD),
            0u32.to_ne_bytes().to_vec(),
            hdr(8, DEST_ATTR_WEIGHT),
            5u32.to_ne_bytes().to_vec(),
            hdr(8, DEST_ATTR_U_THRESH),
            0u32.to_ne_bytes().to_vec(),
            hdr(8, DEST_ATTR_L_THRESH),
            0u32.to_ne_bytes().to_vec(),
        ]
        .concat();
        assert_eq!(b, want);
        // A key-only destination (DEL_DEST) stops after the family.
        assert_eq!(bytes(&dest_attr(&d, false)).len(), 4 + 20 + 8 + 8);
    }

    /// What the kernel sends back decodes to what was asked for, with the kernel's
    /// HASHED flag hidden and a 16-byte IPv4 address (union nf_inet_addr) accepted.
    #[test]
    fn replies_decode_to_the_requested_objects() {
        let s = Service::new(ServiceKey::udp("10.9.0.1:53".parse().unwrap())).scheduler("wrr");
        let Attr::Nested(_, mut a) = service_full(&s) else {
            panic!("nested")
        };
        a[2] = Attr::Value(SVC_ATTR_ADDR, [&[10, 9, 0, 1][..], &[0; 12]].concat());
        let mut flags = (SVC_F_HASHED).to_ne_bytes().to_vec();
        flags.extend_from_slice(&u32::MAX.to_ne_bytes());
        a[5] = Attr::Value(SVC_ATTR_FLAGS, flags);
        let payload = bytes(&Attr::Nested(CMD_ATTR_SERVICE, a));
        assert_eq!(service_of(&payload[4..]).unwrap(), s);

        let mut d = Dest::masquerade("10.9.1.2:5353".parse().unwrap(), 0);
        let Attr::Nested(_, mut a) = dest_attr(&d, true) else {
            panic!("nested")
        };
        a.push(u32_ne(DEST_ATTR_ACTIVE_CONNS, 3));
        a.push(u32_ne(DEST_ATTR_INACT_CONNS, 4));
        let payload = bytes(&Attr::Nested(CMD_ATTR_DEST, a));
        (d.active_conns, d.inactive_conns) = (3, 4);
        assert_eq!(dest_of(&payload[4..]).unwrap(), d);
    }

    #[test]
    fn truncated_replies_are_errors_not_panics() {
        let mut payload = bytes(&service_key(&ServiceKey::tcp("10.1.2.3:80".parse().unwrap())));
        // Cut the port attribute's value to one byte (header length 5).
        let n = payload.len();
        payload[n - 8..n - 6].copy_from_slice(&5u16.to_ne_bytes());
        assert!(service_of(&payload[4..n - 3]).is_err());
        assert!(dest_of(&[]).is_err());
    }

    #[test]
    fn a_message_parses_back_with_its_command() {
        let m = IpvsMsg {
            cmd: CMD_NEW_SERVICE,
            attrs: vec![service_key(&ServiceKey::fwmark(9))],
        };
        let mut b = vec![0u8; m.buffer_len()];
        m.emit(&mut b);
        let back = IpvsMsg::parse_with_param(
            &b,
            GenlHeader {
                cmd: CMD_NEW_SERVICE,
                version: 1,
            },
        )
        .unwrap();
        assert_eq!(back.cmd, CMD_NEW_SERVICE);
        let svc = back.attr(CMD_ATTR_SERVICE).expect("service attribute");
        assert_eq!(fields(svc).unwrap().len(), 2);
    }
}
