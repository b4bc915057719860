//! Whether one nftables table exists, and its comment (netd's tables name their owner
//! there: `Engine::check_owner`), asked with a single nfnetlink request
//! (`NFT_MSG_GETTABLE` for that family and name) on a socket of the calling thread's
//! namespace.
//!
//! libnftables answers `list tables` only after filling its cache, which for netd's
//! tables means dumping chains, sets and every set element: a cost that grows with the
//! number of endpoints, paid by each standalone CNI exec just to learn that the table is
//! still there (`Engine::open_trusting`). The kernel answers this question directly.

use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use super::nfnetlink::{
    attributes, errno_of, family_number, messages, nft_type, Msg, HDR, NFTA_CHAIN_NAME, NFTA_CHAIN_TABLE,
    NFTA_TABLE_NAME, NFTA_TABLE_USERDATA, NFT_MSG_GETCHAIN, NFT_MSG_GETTABLE, NFT_MSG_NEWTABLE, NLMSG_ERROR,
    NLM_F_ACK, NLM_F_REQUEST,
};
use super::KernelError;

/// libnftnl's user data entry of a table's comment (`NFTNL_UDATA_TABLE_COMMENT`): one
/// byte type, one byte length, the string with its NUL.
const UDATA_TABLE_COMMENT: u8 = 0;

/// The request: nlmsghdr, nfgenmsg (family, version 0, res_id 0), NFTA_TABLE_NAME.
pub fn request(family: u8, name: &str, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(
        nft_type(NFT_MSG_GETTABLE),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        0,
    );
    m.str(NFTA_TABLE_NAME, name);
    m.finish()
}

/// A table as the kernel has it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NftTable {
    /// Its comment (`add table ... { comment "..." }`), if it has one.
    pub comment: Option<String>,
}

/// What the kernel's answer says: `Some(table or None)` once it is complete (the ack, or
/// the error), `None` when more is to come. `found` keeps a NEWTABLE seen earlier.
pub fn parse_answer(
    buf: &[u8],
    seq: u32,
    found: &mut Option<NftTable>,
) -> Result<Option<Option<NftTable>>, KernelError> {
    let mut off = 0;
    while off + HDR <= buf.len() {
        let word = |at: usize| u32::from_ne_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
        let len = word(off) as usize;
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        if len < HDR || off + len > buf.len() {
            return Err(KernelError::Nft("malformed nfnetlink answer".into()));
        }
        if word(off + 8) == seq {
            if kind == nft_type(NFT_MSG_NEWTABLE) {
                *found = Some(NftTable {
                    comment: comment_of(&buf[off + HDR..off + len]),
                });
            } else if kind == NLMSG_ERROR && len >= HDR + 4 {
                let errno = -(word(off + HDR) as i32);
                return match errno {
                    0 => Ok(Some(found.take())),
                    libc::ENOENT => Ok(Some(None)),
                    e => Err(KernelError::Nft(format!(
                        "get table: {}",
                        std::io::Error::from_raw_os_error(e)
                    ))),
                };
            }
        }
        off += len.next_multiple_of(4);
    }
    Ok(None)
}

/// The comment in a NEWTABLE's payload (nfgenmsg, then attributes), if any.
fn comment_of(payload: &[u8]) -> Option<String> {
    let (_, mut u) = attributes(payload, 4).find(|(k, _)| *k == NFTA_TABLE_USERDATA)?;
    while u.len() >= 2 {
        let (t, l) = (u[0], u[1] as usize);
        let v = u.get(2..2 + l)?;
        if t == UDATA_TABLE_COMMENT {
            let text = v.strip_suffix(&[0]).unwrap_or(v);
            return Some(String::from_utf8_lossy(text).into_owned());
        }
        u = &u[2 + l..];
    }
    None
}

/// Table `family name` in the calling thread's namespace, if it exists.
pub fn table(family: &str, name: &str) -> Result<Option<NftTable>, KernelError> {
    let fam =
        family_number(family).ok_or_else(|| KernelError::Nft(format!("unknown nft family {family:?}")))?;
    let io = |op: &'static str, source: std::io::Error| KernelError::NfnlIo { op, source };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io("socket", e))?;
    sock.bind_auto().map_err(|e| io("bind", e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| io("connect", e))?;
    let seq = 1;
    sock.send(&request(fam, name, seq), 0)
        .map_err(|e| io("send", e))?;
    let mut found = None;
    let mut buf = Vec::with_capacity(16 * 1024);
    loop {
        buf.clear();
        sock.recv(&mut buf, 0).map_err(|e| io("recv", e))?;
        if buf.is_empty() {
            return Err(KernelError::NfnlClosed);
        }
        if let Some(v) = parse_answer(&buf, seq, &mut found)? {
            return Ok(v);
        }
    }
}

/// NFT_MSG_GETCHAIN for one chain by table and name (answered by the chain and an ack,
/// or ENOENT).
pub fn chain_request(family: u8, table: &str, chain: &str, seq: u32) -> Vec<u8> {
    let mut m = Msg::new(
        nft_type(NFT_MSG_GETCHAIN),
        NLM_F_REQUEST | NLM_F_ACK,
        seq,
        family,
        0,
    );
    m.str(NFTA_CHAIN_TABLE, table);
    m.str(NFTA_CHAIN_NAME, chain);
    m.finish()
}

/// The ack of request `seq` in `buf`: `Some(true)` for success, `Some(false)` for
/// ENOENT, `None` when it is still to come.
fn ack_of(buf: &[u8], seq: u32) -> Result<Option<bool>, KernelError> {
    let Some(errno) = messages(buf)
        .find(|(kind, s, _)| *s == seq && *kind == NLMSG_ERROR)
        .and_then(|(_, _, p)| errno_of(p))
    else {
        return Ok(None);
    };
    match errno {
        0 => Ok(Some(true)),
        libc::ENOENT => Ok(Some(false)),
        e => Err(KernelError::Nft(format!(
            "get chain: {}",
            std::io::Error::from_raw_os_error(e)
        ))),
    }
}

/// Which of `chains` (`(family, name)` in `table`) exist in the calling thread's
/// namespace: one socket, one request each.
pub fn chains_exist(table: &str, chains: &[(&str, &str)]) -> Result<Vec<bool>, KernelError> {
    let io = |op: &'static str, source: std::io::Error| KernelError::NfnlIo { op, source };
    let mut sock = Socket::new(NETLINK_NETFILTER).map_err(|e| io("socket", e))?;
    sock.bind_auto().map_err(|e| io("bind", e))?;
    sock.connect(&SocketAddr::new(0, 0))
        .map_err(|e| io("connect", e))?;
    let mut buf = Vec::with_capacity(16 * 1024);
    let mut out = Vec::with_capacity(chains.len());
    for (seq, (family, chain)) in (1u32..).zip(chains) {
        let fam = family_number(family)
            .ok_or_else(|| KernelError::Nft(format!("unknown nft family {family:?}")))?;
        sock.send(&chain_request(fam, table, chain, seq), 0)
            .map_err(|e| io("send", e))?;
        loop {
            buf.clear();
            sock.recv(&mut buf, 0).map_err(|e| io("recv", e))?;
            if buf.is_empty() {
                return Err(KernelError::NfnlClosed);
            }
            if let Some(there) = ack_of(&buf, seq)? {
                out.push(there);
                break;
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_layout() {
        let r = request(1, "netd", 7);
        assert_eq!(r.len(), 16 + 4 + 12);
        assert_eq!(u32::from_ne_bytes(r[0..4].try_into().unwrap()), 32);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 0x0a01);
        assert_eq!(r[16], 1, "family inet");
        assert_eq!(&r[24..29], b"netd\0");
        assert_eq!(family_number("bridge"), Some(7));
        assert_eq!(family_number("nope"), None);
    }

    fn msg(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let len = HDR + payload.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(payload);
        b
    }

    #[test]
    fn answers() {
        let mut found = None;
        // NEWTABLE then the ack: there, without a comment.
        let mut b = msg(0x0a00, 1, &[1, 0, 0, 0]);
        b.extend(msg(NLMSG_ERROR, 1, &0i32.to_ne_bytes()));
        assert_eq!(
            parse_answer(&b, 1, &mut found).unwrap(),
            Some(Some(NftTable::default()))
        );
        // With a comment (NFTA_TABLE_USERDATA: libnftnl's entry 0, NUL-terminated) after
        // another attribute.
        let mut p = vec![1, 0, 0, 0];
        p.extend_from_slice(&12u16.to_ne_bytes());
        p.extend_from_slice(&NFTA_TABLE_NAME.to_ne_bytes());
        p.extend_from_slice(b"netd\0\0\0\0");
        let udata = [&[UDATA_TABLE_COMMENT, 6][..], b"owner\0"].concat();
        p.extend_from_slice(&((4 + udata.len()) as u16).to_ne_bytes());
        p.extend_from_slice(&NFTA_TABLE_USERDATA.to_ne_bytes());
        p.extend_from_slice(&udata);
        p.resize(p.len().next_multiple_of(4), 0);
        let mut b = msg(0x0a00, 2, &p);
        b.extend(msg(NLMSG_ERROR, 2, &0i32.to_ne_bytes()));
        let mut found = None;
        let t = parse_answer(&b, 2, &mut found).unwrap().unwrap().unwrap();
        assert_eq!(t.comment.as_deref(), Some("owner"));
        // ENOENT: not there.
        let mut found = None;
        let b = msg(NLMSG_ERROR, 1, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(parse_answer(&b, 1, &mut found).unwrap(), Some(None));
        // Another error is an error; a partial answer asks for more.
        let b = msg(NLMSG_ERROR, 1, &(-libc::EPERM).to_ne_bytes());
        assert!(parse_answer(&b, 1, &mut None).is_err());
        let mut found = None;
        assert_eq!(
            parse_answer(&msg(0x0a00, 1, &[1, 0, 0, 0]), 1, &mut found).unwrap(),
            None
        );
        assert!(found.is_some());
    }

    #[test]
    fn chain_lookup() {
        let r = chain_request(7, "netd", "antispoof", 3);
        assert_eq!(u16::from_ne_bytes(r[4..6].try_into().unwrap()), 0x0a04);
        assert_eq!(r[16], 7, "family bridge");
        let attrs: Vec<(u16, &[u8])> = attributes(&r[HDR..], 4).collect();
        assert_eq!(attrs, [(1, &b"netd\0"[..]), (3, &b"antispoof\0"[..])]);
        // The chain, then the ack: there. ENOENT: not. Another request's ack: wait.
        let mut b = msg(0x0a03, 3, &[7, 0, 0, 0]);
        b.extend(msg(NLMSG_ERROR, 3, &0i32.to_ne_bytes()));
        assert_eq!(ack_of(&b, 3).unwrap(), Some(true));
        let b = msg(NLMSG_ERROR, 3, &(-libc::ENOENT).to_ne_bytes());
        assert_eq!(ack_of(&b, 3).unwrap(), Some(false));
        assert_eq!(ack_of(&b, 4).unwrap(), None);
        let b = msg(NLMSG_ERROR, 3, &(-libc::EPERM).to_ne_bytes());
        assert!(ack_of(&b, 3).is_err());
    }
}
