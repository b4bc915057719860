//! The nfnetlink (nf_tables) wire format shared by every hand-written nftables request:
//! the message and attribute numbers of the kernel's uapi headers
//! (`linux/netfilter/nfnetlink.h`, `linux/netfilter/nf_tables.h`), a message builder and
//! allocation-free walkers over answers.
//!
//! The `netlink-packet-*` crates have no nf_tables messages, and the few requests netd
//! sends by hand (element batches, one table lookup, the generation id) are a handful
//! of attributes each, so they are written here once instead of pulling in libnftnl.

/// struct nlmsghdr.
pub const HDR: usize = 16;
pub const NLMSG_ERROR: u16 = 2;
pub const NLM_F_REQUEST: u16 = 1;
pub const NLM_F_ACK: u16 = 4;
pub const NLM_F_CREATE: u16 = 0x400;
pub const NLM_F_APPEND: u16 = 0x800;
pub const NLA_F_NESTED: u16 = 0x8000;

pub const NFNL_SUBSYS_NFTABLES: u16 = 10;
pub const NFNL_MSG_BATCH_BEGIN: u16 = 16;
pub const NFNL_MSG_BATCH_END: u16 = 17;

pub const NFT_MSG_NEWTABLE: u16 = 0;
pub const NFT_MSG_GETTABLE: u16 = 1;
pub const NFT_MSG_NEWCHAIN: u16 = 3;
pub const NFT_MSG_GETCHAIN: u16 = 4;
pub const NFT_MSG_DELCHAIN: u16 = 5;
pub const NFT_MSG_NEWRULE: u16 = 6;
pub const NFT_MSG_DELRULE: u16 = 8;
pub const NFT_MSG_NEWSET: u16 = 9;
pub const NFT_MSG_GETSET: u16 = 10;
pub const NFT_MSG_DELSET: u16 = 11;
pub const NFT_MSG_NEWSETELEM: u16 = 12;
pub const NFT_MSG_DELSETELEM: u16 = 14;
pub const NFT_MSG_NEWGEN: u16 = 15;
pub const NFT_MSG_GETGEN: u16 = 16;

pub const NFTA_TABLE_NAME: u16 = 1;
pub const NFTA_TABLE_USERDATA: u16 = 6;
pub const NFTA_CHAIN_TABLE: u16 = 1;
pub const NFTA_CHAIN_NAME: u16 = 3;
pub const NFTA_SET_TABLE: u16 = 1;
pub const NFTA_SET_NAME: u16 = 2;
pub const NFTA_SET_FLAGS: u16 = 3;
pub const NFTA_SET_KEY_TYPE: u16 = 4;
pub const NFTA_SET_KEY_LEN: u16 = 5;
pub const NFTA_SET_DATA_TYPE: u16 = 6;
pub const NFTA_SET_DATA_LEN: u16 = 7;
pub const NFTA_SET_DESC: u16 = 9;
pub const NFTA_SET_DESC_SIZE: u16 = 1;
pub const NFTA_SET_ID: u16 = 10;
pub const NFTA_SET_TIMEOUT: u16 = 11;
pub const NFTA_SET_USERDATA: u16 = 13;
pub const NFTA_SET_ELEM_LIST_SET_ID: u16 = 4;
pub const NFTA_CHAIN_HOOK: u16 = 4;
pub const NFTA_CHAIN_POLICY: u16 = 5;
pub const NFTA_CHAIN_TYPE: u16 = 7;
pub const NFTA_CHAIN_USERDATA: u16 = 12;
pub const NFTA_HOOK_HOOKNUM: u16 = 1;
pub const NFTA_HOOK_PRIORITY: u16 = 2;
pub const NFTA_RULE_TABLE: u16 = 1;
pub const NFTA_RULE_CHAIN: u16 = 2;
pub const NFTA_RULE_EXPRESSIONS: u16 = 4;
pub const NFTA_RULE_USERDATA: u16 = 7;
pub const NFTA_EXPR_NAME: u16 = 1;
pub const NFTA_EXPR_DATA: u16 = 2;
pub const NFTA_DATA_VERDICT: u16 = 2;
pub const NFTA_VERDICT_CODE: u16 = 1;
pub const NFTA_VERDICT_CHAIN: u16 = 2;
pub const NFTA_SET_ELEM_LIST_TABLE: u16 = 1;
pub const NFTA_SET_ELEM_LIST_SET: u16 = 2;
pub const NFTA_SET_ELEM_LIST_ELEMENTS: u16 = 3;
pub const NFTA_LIST_ELEM: u16 = 1;
pub const NFTA_SET_ELEM_KEY: u16 = 1;
pub const NFTA_SET_ELEM_DATA: u16 = 2;
pub const NFTA_DATA_VALUE: u16 = 1;
pub const NFTA_GEN_ID: u16 = 1;
/// NFT_SET_MAP: a set whose elements carry data.
pub const NFT_SET_MAP: u32 = 0x8;

/// The nlmsg type of nf_tables message `msg`.
pub const fn nft_type(msg: u16) -> u16 {
    (NFNL_SUBSYS_NFTABLES << 8) | msg
}

/// nftables family numbers (`NFPROTO_*`) by their `nft` names.
pub fn family_number(family: &str) -> Option<u8> {
    Some(match family {
        "inet" => 1,
        "ip" => 2,
        "arp" => 3,
        "netdev" => 5,
        "bridge" => 7,
        "ip6" => 10,
        _ => return None,
    })
}

/// The `nft` name of a family number, "?" for one it does not know.
pub fn family_name(n: u8) -> &'static str {
    match n {
        1 => "inet",
        2 => "ip",
        3 => "arp",
        5 => "netdev",
        7 => "bridge",
        10 => "ip6",
        _ => "?",
    }
}

/// One request being written: nlmsghdr, nfgenmsg, then attributes.
pub struct Msg(Vec<u8>);

impl Msg {
    pub fn new(kind: u16, flags: u16, seq: u32, family: u8, res_id: u16) -> Msg {
        let mut b = Vec::with_capacity(256);
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&kind.to_ne_bytes());
        b.extend_from_slice(&flags.to_ne_bytes());
        b.extend_from_slice(&seq.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.push(family);
        b.push(0); // NFNETLINK_V0
        b.extend_from_slice(&res_id.to_be_bytes());
        Msg(b)
    }
    pub fn attr(&mut self, kind: u16, data: &[u8]) {
        let len = 4 + data.len();
        self.0.extend_from_slice(&(len as u16).to_ne_bytes());
        self.0.extend_from_slice(&kind.to_ne_bytes());
        self.0.extend_from_slice(data);
        self.0.resize(self.0.len().next_multiple_of(4), 0);
    }
    /// A 32-bit attribute in network byte order (NLA_BE32, as nf_tables takes them).
    pub fn be32(&mut self, kind: u16, v: u32) {
        self.attr(kind, &v.to_be_bytes());
    }
    pub fn str(&mut self, kind: u16, s: &str) {
        let mut d = s.as_bytes().to_vec();
        d.push(0);
        self.attr(kind, &d);
    }
    /// Starts a nested attribute; `end` writes its length.
    pub fn begin(&mut self, kind: u16) -> usize {
        let at = self.0.len();
        self.0.extend_from_slice(&0u16.to_ne_bytes());
        self.0.extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        at
    }
    /// A nest over 64 KiB cannot be written (its length is 16 bits): callers keep
    /// lists below that (`nft_svc::ELEMS_PER_MSG`); a debug build checks.
    pub fn end(&mut self, at: usize) {
        debug_assert!(
            self.0.len() - at <= usize::from(u16::MAX),
            "netlink nest over 64 KiB"
        );
        let len = (self.0.len() - at) as u16;
        self.0[at..at + 2].copy_from_slice(&len.to_ne_bytes());
    }
    pub fn finish(mut self) -> Vec<u8> {
        let len = self.0.len() as u32;
        self.0[0..4].copy_from_slice(&len.to_ne_bytes());
        self.0
    }
}

/// Walks the nlmsgs in `buf`: (type, seq, payload after the header); stops at a
/// malformed one. Allocation-free, so a forked child may use it (`detach`).
pub fn messages(buf: &[u8]) -> impl Iterator<Item = (u16, u32, &[u8])> {
    let mut off = 0;
    std::iter::from_fn(move || {
        if off + HDR > buf.len() {
            return None;
        }
        let len = u32::from_ne_bytes(buf[off..off + 4].try_into().ok()?) as usize;
        if len < HDR || off + len > buf.len() {
            return None;
        }
        let kind = u16::from_ne_bytes([buf[off + 4], buf[off + 5]]);
        let seq = u32::from_ne_bytes(buf[off + 8..off + 12].try_into().ok()?);
        let payload = &buf[off + HDR..off + len];
        off += len.next_multiple_of(4);
        Some((kind, seq, payload))
    })
}

/// Walks the netlink attributes of `payload` from byte `from` (past a family header):
/// (type without the nested/byte-order flags, value); stops at a malformed one.
/// Allocation-free, like `messages`.
pub fn attributes(payload: &[u8], from: usize) -> impl Iterator<Item = (u16, &[u8])> {
    let mut off = from;
    std::iter::from_fn(move || {
        let head = payload.get(off..off + 4)?;
        let len = u16::from_ne_bytes([head[0], head[1]]) as usize;
        let kind = u16::from_ne_bytes([head[2], head[3]]) & 0x3fff;
        let value = payload.get(off + 4..off.checked_add(len)?)?;
        off += len.max(4).next_multiple_of(4);
        Some((kind, value))
    })
}

/// The errno of an NLMSG_ERROR payload (0: ack).
pub fn errno_of(payload: &[u8]) -> Option<i32> {
    Some(-i32::from_ne_bytes(payload.get(0..4)?.try_into().ok()?))
}
