//! The batches of every attach and detach (element changes only, `firewall::batch`)
//! sent as one raw nfnetlink transaction, without libnftables.
//!
//! libnftables costs a short-lived process (the CNI plugin in standalone mode) ~2 ms per
//! batch before the kernel sees anything: loading six libraries, reading
//! `/etc/iproute2/*`, parsing the text, then filling its cache (tables, chains, sets,
//! set elements, objects: six dumps). The kernel needs none of that to add an element
//! to a named set. Here each set's key and data types come from one `NFT_MSG_GETSET`
//! each, the elements are encoded from their typed parts the way nft encodes them (each
//! part of a concatenation padded to 4 bytes), and the changes go to the kernel in one
//! batch, applied all or nothing, as libnftables would send them.
//!
//! Anything else — a set with interval or timeout flags, a set whose type in the kernel
//! is not the parts' (a table made by someone else), a type this module does not
//! encode — is `Unsupported`, and the caller hands the batch to libnftables as text.

use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd};

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nfnetlink::{
    attributes, errno_of, family_number, messages, nft_type, Msg, NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END,
    NFNL_SUBSYS_NFTABLES, NFTA_DATA_VALUE, NFTA_LIST_ELEM, NFTA_SET_DATA_LEN, NFTA_SET_DATA_TYPE,
    NFTA_SET_ELEM_DATA, NFTA_SET_ELEM_KEY, NFTA_SET_ELEM_LIST_ELEMENTS, NFTA_SET_ELEM_LIST_SET,
    NFTA_SET_ELEM_LIST_TABLE, NFTA_SET_FLAGS, NFTA_SET_KEY_LEN, NFTA_SET_KEY_TYPE, NFTA_SET_NAME,
    NFTA_SET_TABLE, NFT_MSG_DELSETELEM, NFT_MSG_GETSET, NFT_MSG_NEWSET, NFT_MSG_NEWSETELEM, NFT_SET_MAP,
    NLMSG_ERROR, NLM_F_ACK, NLM_F_CREATE, NLM_F_REQUEST,
};
use super::KernelError;
use crate::firewall::batch::{ElementChange, Part};
use crate::model::Proto;

/// nft's datatype numbers (nftables `enum datatypes`), as the kernel keeps them in
/// NFTA_SET_KEY_TYPE: a concatenation is its parts' numbers, 6 bits each, first part
/// highest.
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_ETHERADDR: u32 = 9;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_IFNAME: u32 = 41;
const TYPE_BITS: u32 = 6;

/// Why the fast path did not apply a batch.
#[derive(Debug)]
pub enum Error {
    /// Not something this module encodes: use libnftables.
    Unsupported,
    Kernel(KernelError),
}

impl From<KernelError> for Error {
    fn from(e: KernelError) -> Self {
        Error::Kernel(e)
    }
}

/// A set's key and data layout as the kernel has it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct SetInfo {
    flags: u32,
    key_type: u32,
    key_len: u32,
    data_type: u32,
    data_len: u32,
}

/// The parts' datatype numbers of a (possibly concatenated) type.
fn type_parts(mut t: u32) -> Vec<u32> {
    let mut parts = Vec::new();
    while t != 0 {
        parts.push(t & ((1 << TYPE_BITS) - 1));
        t >>= TYPE_BITS;
    }
    parts.reverse();
    parts
}

/// The nft datatype number of a part.
fn part_type(p: &Part) -> u32 {
    match p {
        Part::Ifname(_) => TYPE_IFNAME,
        Part::Ipv4(_) => TYPE_IPADDR,
        Part::Ipv6(_) => TYPE_IP6ADDR,
        Part::Ether(_) => TYPE_ETHERADDR,
        Part::Proto(_) => TYPE_INET_PROTOCOL,
        Part::Port(_) => TYPE_INET_SERVICE,
    }
}

/// One part in nft's encoding (network byte order, strings zero-padded).
pub(super) fn encode_part(p: &Part) -> Option<Vec<u8>> {
    Some(match p {
        Part::Ifname(name) => {
            if name.is_empty() || name.len() > 15 || name.contains('\0') {
                return None;
            }
            let mut b = name.as_bytes().to_vec();
            b.resize(16, 0);
            b
        }
        Part::Ipv4(a) => a.octets().to_vec(),
        Part::Ipv6(a) => a.octets().to_vec(),
        Part::Ether(m) => m.to_vec(),
        Part::Proto(Proto::Tcp) => vec![libc::IPPROTO_TCP as u8],
        Part::Proto(Proto::Udp) => vec![libc::IPPROTO_UDP as u8],
        Part::Port(p) => p.to_be_bytes().to_vec(),
    })
}

/// A key or value: one part as is, the parts of a concatenation each padded to 4 bytes.
/// None when the parts are not of the set's type `ty` or the length is not the kernel's.
fn encode(ty: u32, len: u32, parts: &[Part]) -> Option<Vec<u8>> {
    let types = type_parts(ty);
    if types.len() != parts.len() || types.is_empty() {
        return None;
    }
    let mut out = Vec::new();
    for (t, p) in types.iter().zip(parts) {
        if part_type(p) != *t {
            return None;
        }
        let mut b = encode_part(p)?;
        if types.len() > 1 {
            b.resize(b.len().next_multiple_of(4), 0);
        }
        out.extend(b);
    }
    (out.len() == len as usize).then_some(out)
}

pub(super) fn io(op: &'static str, source: std::io::Error) -> KernelError {
    KernelError::NfnlIo { op, source }
}

/// The attributes of a NEWSET answer (after the 4-byte nfgenmsg).
fn set_info(payload: &[u8]) -> Option<SetInfo> {
    let mut info = SetInfo {
        flags: 0,
        key_type: 0,
        key_len: 0,
        data_type: 0,
        data_len: 0,
    };
    for (kind, v) in attributes(payload, 4) {
        let be32 = || Some(u32::from_be_bytes(v.get(0..4)?.try_into().ok()?));
        match kind {
            NFTA_SET_FLAGS => info.flags = be32()?,
            NFTA_SET_KEY_TYPE => info.key_type = be32()?,
            NFTA_SET_KEY_LEN => info.key_len = be32()?,
            NFTA_SET_DATA_TYPE => info.data_type = be32()?,
            NFTA_SET_DATA_LEN => info.data_len = be32()?,
            _ => {}
        }
    }
    Some(info)
}

/// An nfnetlink socket for element batches and table lookups, kept open: the last close
/// of such a socket waits while anyone's deleted elements wait to be freed (an RCU grace
/// period, see `detach`). The daemon keeps one for good; a short-lived process hands it
/// to a detached process at the end when it deleted something.
pub struct Conn {
    pub(super) sock: Socket,
    seq: u32,
    pub(super) buf: Vec<u8>,
    /// Whether a batch of this socket deleted elements.
    pub deleted: bool,
}

impl Conn {
    /// A socket in the calling thread's namespace.
    pub fn open() -> Result<Conn, KernelError> {
        let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io("socket", e))?;
        sock.bind_auto().map_err(|e| io("bind", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| io("connect", e))?;
        Ok(Conn {
            sock,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
            deleted: false,
        })
    }

    pub fn raw_fd(&self) -> std::os::fd::RawFd {
        use std::os::fd::AsRawFd;
        self.sock.as_raw_fd()
    }

    /// nf_tables' generation id in this socket's namespace, bumped by every commit
    /// (NFT_MSG_GETGEN); `None` if the kernel does not answer.
    pub fn generation(&mut self) -> Option<u32> {
        let seq = self.next_seq();
        // SAFETY: syscalls on stack buffers.
        unsafe { super::detach::nft_generation(self.raw_fd(), seq) }
    }

    /// Returns once no commit has happened for two RCU grace periods, or after a few
    /// seconds: what a detached child waits for before it closes this socket
    /// (`detach::wait_until_quiet`).
    pub fn wait_until_quiet(&self) {
        // SAFETY: syscalls on stack buffers.
        unsafe { super::detach::wait_until_quiet(self.raw_fd()) }
    }

    pub fn into_fd(self) -> OwnedFd {
        // SAFETY: the descriptor is the socket's, handed over exactly once.
        unsafe { OwnedFd::from_raw_fd(self.sock.into_raw_fd()) }
    }

    /// Table `family name`, if it exists (`nft_table`), on this socket.
    pub fn table(
        &mut self,
        family: u8,
        name: &str,
    ) -> Result<Option<super::nft_table::NftTable>, KernelError> {
        let seq = self.next_seq();
        self.sock
            .send(&super::nft_table::request(family, name, seq), 0)
            .map_err(|e| io("send", e))?;
        let mut found = None;
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(|e| io("recv", e))?;
            if self.buf.is_empty() {
                return Err(KernelError::NfnlClosed);
            }
            if let Some(v) = super::nft_table::parse_answer(&self.buf, seq, &mut found)? {
                return Ok(v);
            }
        }
    }

    pub(super) fn next_seq(&mut self) -> u32 {
        self.seq += 1;
        self.seq
    }

    /// The layout of each named set, asked for in one send (one round trip, not one
    /// per set); Unsupported when one is missing (libnftables then reports it in its
    /// own words) or has flags other than "map".
    fn sets(&mut self, names: &[(u8, &str, &str)]) -> Result<Vec<SetInfo>, Error> {
        let mut out = Vec::new();
        let mut seqs = Vec::with_capacity(names.len());
        for (family, table, set) in names {
            let seq = self.next_seq();
            let mut m = Msg::new(
                nft_type(NFT_MSG_GETSET),
                NLM_F_REQUEST | NLM_F_ACK,
                seq,
                *family,
                0,
            );
            m.str(NFTA_SET_TABLE, table);
            m.str(NFTA_SET_NAME, set);
            out.extend(m.finish());
            seqs.push(seq);
        }
        self.sock.send(&out, 0).map_err(|e| io("send", e))?;
        // Per request: its set's layout, then its ACK (or its error).
        let mut info: Vec<Option<SetInfo>> = vec![None; names.len()];
        let mut done = vec![false; names.len()];
        while done.iter().any(|d| !d) {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(|e| io("recv", e))?;
            if self.buf.is_empty() {
                return Err(KernelError::NfnlClosed.into());
            }
            for (kind, s, payload) in messages(&self.buf) {
                let Some(i) = seqs.iter().position(|q| *q == s) else {
                    continue;
                };
                if kind == nft_type(NFT_MSG_NEWSET) {
                    info[i] = set_info(payload);
                } else if kind == NLMSG_ERROR {
                    match (errno_of(payload), info[i]) {
                        (Some(0), Some(si)) if si.flags & !NFT_SET_MAP == 0 => done[i] = true,
                        _ => return Err(Error::Unsupported),
                    }
                }
            }
        }
        Ok(info.into_iter().flatten().collect())
    }

    /// Sends the commands as one batch and checks every answer.
    pub fn apply(&mut self, cmds: &[&ElementChange]) -> Result<(), Error> {
        let mut names: Vec<(u8, &str, &str)> = Vec::new();
        let mut at = Vec::with_capacity(cmds.len());
        for c in cmds {
            let family = family_number(c.family.name()).ok_or(Error::Unsupported)?;
            let n = (family, c.table.as_str(), c.set.as_str());
            at.push(names.iter().position(|m| *m == n).unwrap_or_else(|| {
                names.push(n);
                names.len() - 1
            }));
        }
        let infos = self.sets(&names)?;
        let mut encoded = Vec::new();
        for (c, at) in cmds.iter().zip(at) {
            let info = infos[at];
            let is_map = info.flags & NFT_SET_MAP != 0;
            let mut elems = Vec::new();
            for e in &c.elems {
                let key = encode(info.key_type, info.key_len, &e.key).ok_or(Error::Unsupported)?;
                let data = match (&e.value, is_map && c.add) {
                    (Some(v), true) => {
                        Some(encode(info.data_type, info.data_len, v).ok_or(Error::Unsupported)?)
                    }
                    (None, false) => None,
                    // A value on a delete is ignored by nft; a map add needs one.
                    (Some(_), false) if is_map => None,
                    _ => return Err(Error::Unsupported),
                };
                elems.push((key, data));
            }
            encoded.push((*c, names[at].0, elems));
        }
        let mut out = Vec::new();
        let res = NFNL_SUBSYS_NFTABLES;
        out.extend(Msg::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, self.next_seq(), 0, res).finish());
        let mut seqs = Vec::new();
        for (c, family, elems) in &encoded {
            let seq = self.next_seq();
            seqs.push((seq, *c));
            let (kind, flags) = if c.add {
                (NFT_MSG_NEWSETELEM, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_ACK)
            } else {
                (NFT_MSG_DELSETELEM, NLM_F_REQUEST | NLM_F_ACK)
            };
            let mut m = Msg::new(nft_type(kind), flags, seq, *family, 0);
            m.str(NFTA_SET_ELEM_LIST_TABLE, &c.table);
            m.str(NFTA_SET_ELEM_LIST_SET, &c.set);
            let list = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
            for (key, data) in elems {
                let e = m.begin(NFTA_LIST_ELEM);
                let k = m.begin(NFTA_SET_ELEM_KEY);
                m.attr(NFTA_DATA_VALUE, key);
                m.end(k);
                if let Some(d) = data {
                    let n = m.begin(NFTA_SET_ELEM_DATA);
                    m.attr(NFTA_DATA_VALUE, d);
                    m.end(n);
                }
                m.end(e);
            }
            m.end(list);
            out.extend(m.finish());
        }
        out.extend(Msg::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, self.next_seq(), 0, res).finish());
        self.sock.send(&out, 0).map_err(|e| io("send", e))?;
        // The kernel handles the whole batch inside that send: every answer is queued.
        let mut acked = 0;
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(io("recv", e).into()),
            }
            if self.buf.is_empty() {
                break;
            }
            for (kind, s, payload) in messages(&self.buf) {
                let Some((_, c)) = seqs.iter().find(|(q, _)| *q == s) else {
                    continue;
                };
                if kind != NLMSG_ERROR {
                    continue;
                }
                match errno_of(payload) {
                    Some(0) => acked += 1,
                    Some(e) => {
                        return Err(KernelError::Nft(format!(
                            "{} element {} {} {}: {}",
                            if c.add { "add" } else { "delete" },
                            c.family,
                            c.table,
                            c.set,
                            std::io::Error::from_raw_os_error(e)
                        ))
                        .into())
                    }
                    None => return Err(KernelError::Nft("malformed nfnetlink answer".into()).into()),
                }
            }
        }
        if cmds.iter().any(|c| !c.add) {
            self.deleted = true;
        }
        if acked != seqs.len() {
            return Err(KernelError::NfnlBatch {
                acked,
                sent: seqs.len(),
            }
            .into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ifname(n: &str) -> Part {
        Part::Ifname(n.into())
    }

    #[test]
    fn keys_encode_like_nft() {
        // Reference bytes from `nft --debug=netlink add element ...` (nftables 1.0.6).
        let ifname_mac = (TYPE_IFNAME << TYPE_BITS) | TYPE_ETHERADDR;
        let k = encode(
            ifname_mac,
            24,
            &[ifname("x"), Part::Ether([0x02, 0x42, 0x0a, 0, 0, 1])],
        )
        .unwrap();
        let mut want = vec![b'x'];
        want.resize(16, 0);
        want.extend([0x02, 0x42, 0x0a, 0x00, 0x00, 0x01, 0, 0]);
        assert_eq!(k, want);
        let proto_port = (TYPE_INET_PROTOCOL << TYPE_BITS) | TYPE_INET_SERVICE;
        assert_eq!(
            encode(proto_port, 8, &[Part::Proto(Proto::Tcp), Part::Port(8080)]).unwrap(),
            [6, 0, 0, 0, 0x1f, 0x90, 0, 0]
        );
        assert_eq!(
            encode(proto_port, 8, &[Part::Proto(Proto::Udp), Part::Port(53)]).unwrap(),
            [17, 0, 0, 0, 0, 53, 0, 0]
        );
        let addr_port = (TYPE_IPADDR << TYPE_BITS) | TYPE_INET_SERVICE;
        assert_eq!(
            encode(addr_port, 8, &[Part::Ipv4([10, 1, 0, 3].into()), Part::Port(80)]).unwrap(),
            [10, 1, 0, 3, 0, 80, 0, 0]
        );
        let v6: std::net::Ipv6Addr = "fd00::2".parse().unwrap();
        assert_eq!(encode(TYPE_IP6ADDR, 16, &[Part::Ipv6(v6)]).unwrap(), v6.octets());
        // A single part is not padded.
        assert_eq!(encode(TYPE_IFNAME, 16, &[ifname("ab")]).unwrap().len(), 16);
        assert_eq!(type_parts((TYPE_IFNAME << TYPE_BITS) | TYPE_IP6ADDR), [41, 8]);
    }

    /// What the kernel's set does not hold goes to libnftables instead (`None` here).
    #[test]
    fn parts_that_do_not_fit_the_set_are_refused() {
        let ifname_mac = (TYPE_IFNAME << TYPE_BITS) | TYPE_ETHERADDR;
        // A part of another type than the set's, in either place.
        assert!(encode(TYPE_IPADDR, 4, &[Part::Port(80)]).is_none());
        assert!(encode(ifname_mac, 24, &[ifname("x"), Part::Ipv4([10, 0, 0, 1].into())]).is_none());
        // Too few or too many parts; a length that is not the kernel's.
        assert!(encode(ifname_mac, 24, &[ifname("x")]).is_none());
        assert!(encode(TYPE_IFNAME, 16, &[ifname("x"), ifname("y")]).is_none());
        assert!(encode(TYPE_IPADDR, 16, &[Part::Ipv4([10, 1, 0, 3].into())]).is_none());
        // A name the kernel cannot hold; a type this module does not encode.
        assert!(encode(TYPE_IFNAME, 16, &[ifname("a-very-long-name-x")]).is_none());
        assert!(encode(TYPE_IFNAME, 16, &[ifname("")]).is_none());
        assert!(encode(99, 4, &[Part::Port(1)]).is_none());
    }
}
