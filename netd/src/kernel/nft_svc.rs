//! Service batches (`firewall::svc_cmd::SvcCmd`) sent to the kernel as one raw
//! nfnetlink transaction, without libnftables.
//!
//! libnftables (1.0.6) fills its cache before any `add rule` or `delete chain`: it dumps
//! every chain of the table, so one backend change of one service received 954 KB at
//! 1,000 services (and 320 KB for a single `add rule` in a table of 5,000 chains). The
//! kernel needs none of it: every service object is named, so each command is one
//! message, and a change sends and receives the same bytes at any size
//! (docs/benchmarks.md, "Services").
//!
//! Each message is what `nft --debug=netlink,mnl` shows libnftables sending for the same
//! text (`SvcCmd`'s `Display`): the same expressions, registers, byte orders and user
//! data (comments, and the set layout nft reads back when it lists the table), so `nft
//! list table inet netd` prints the same either way
//! (`integration/tests/services_nft_wire.rs`). A `numgen ... vmap { ... }` is an anonymous
//! constant map made in the same batch and referred to by its batch-local id; unlike
//! nft, which names it `__map%d` for the kernel to number, it is named after its chain
//! (`anon_name`: the kernel's numbering scans every set of the table each time).
//!
//! Only the last message asks for an ack: the kernel reports every failing message
//! anyway, and a full load of 10,000 services is ~200,000 messages whose acks would
//! overflow the socket's receive buffer. Each message has its own sequence number, so
//! an error names the command that failed.

use super::nfnetlink::*;
use super::nft_elements::{encode_part, io, Conn};
use super::KernelError;
use crate::firewall::batch::Part;
use crate::firewall::svc_cmd::{
    hairpin_set, AffinitySet, ChainKind, DispatchMap, Hook, MapElement, PickElement, PickMap, SvcCmd,
    SvcRule, SvcRuleLine, HAIRPIN_MARK,
};
use crate::firewall::TABLE;
use crate::model::Proto;

const INET: u8 = 1;

// Expression attributes (linux/netfilter/nf_tables.h), per expression.
const META_DREG: u16 = 1;
const META_KEY: u16 = 2;
const META_SREG: u16 = 3;
const META_MARK: u32 = 3;
const META_IIFNAME: u32 = 6;
const META_NFPROTO: u32 = 15;
const META_L4PROTO: u32 = 16;
const CMP_SREG: u16 = 1;
const CMP_OP: u16 = 2;
const CMP_DATA: u16 = 3;
const CMP_EQ: u32 = 0;
const CMP_NEQ: u32 = 1;
const PAYLOAD_DREG: u16 = 1;
const PAYLOAD_BASE: u16 = 2;
const PAYLOAD_OFFSET: u16 = 3;
const PAYLOAD_LEN: u16 = 4;
const BASE_NETWORK: u32 = 1;
const BASE_TRANSPORT: u32 = 2;
const LOOKUP_SET: u16 = 1;
const LOOKUP_SREG: u16 = 2;
const LOOKUP_DREG: u16 = 3;
const LOOKUP_SET_ID: u16 = 4;
const IMM_DREG: u16 = 1;
const IMM_DATA: u16 = 2;
const DYNSET_SET_NAME: u16 = 1;
const DYNSET_OP: u16 = 3;
const DYNSET_SREG_KEY: u16 = 4;
const DYNSET_OP_UPDATE: u32 = 1;
const NAT_TYPE: u16 = 1;
const NAT_FAMILY: u16 = 2;
const NAT_REG_ADDR_MIN: u16 = 3;
const NAT_REG_PROTO_MIN: u16 = 5;
const NAT_FLAGS: u16 = 7;
const NAT_DNAT: u32 = 1;
/// NF_NAT_RANGE_PROTO_SPECIFIED: the port is set too.
const NAT_PROTO_SPECIFIED: u32 = 2;
const NUMGEN_DREG: u16 = 1;
const NUMGEN_MODULUS: u16 = 2;
const NUMGEN_TYPE: u16 = 3;
const NUMGEN_OFFSET: u16 = 4;
const NUMGEN_RANDOM: u32 = 1;
const REJECT_TYPE: u16 = 1;
const REJECT_ICMP_CODE: u16 = 2;
const REJECT_TCP_RST: u32 = 1;
const REJECT_ICMPX: u32 = 2;
const ICMPX_PORT_UNREACH: u8 = 1;
const FIB_DREG: u16 = 1;
const FIB_RESULT: u16 = 2;
const FIB_FLAGS: u16 = 3;
const FIB_RESULT_ADDRTYPE: u32 = 3;
const FIB_F_SADDR: u32 = 1;
const FIB_F_DADDR: u32 = 2;
/// RTN_LOCAL, as fib's `type` result holds it (host byte order).
const RTN_LOCAL: u32 = 2;

/// Registers as nft allocates them: `NFT_REG_1` (16 bytes) and the 32-bit registers
/// after it (`NFT_REG32_00` is 8), which a concatenation's later parts go to.
const REG_VERDICT: u32 = 0;
const REG_1: u32 = 1;
const REG_2: u32 = 2;
const REG32_01: u32 = 9;
const REG32_02: u32 = 10;
const REG32_05: u32 = 13;

const NF_DROP: u32 = 0;
const NF_ACCEPT: u32 = 1;
const NFT_GOTO: u32 = -4i32 as u32;

// Set flags and types.
const SET_ANONYMOUS: u32 = 0x1;
const SET_CONSTANT: u32 = 0x2;
const SET_MAP: u32 = 0x8;
const SET_TIMEOUT: u32 = 0x10;
const SET_EVAL: u32 = 0x20;
const TYPE_INTEGER: u32 = 4;
const TYPE_IPADDR: u32 = 7;
const TYPE_IP6ADDR: u32 = 8;
const TYPE_INET_PROTOCOL: u32 = 12;
const TYPE_INET_SERVICE: u32 = 13;
const TYPE_VERDICT: u32 = 0xffff_ff00;

/// libnftnl's set user data, as nft 1.0.6 writes it (nft reads it back to list the
/// set): type, length, value.
/// An affinity set (`type ipv4_addr`): key byte order big endian (2).
const UDATA_ADDR_SET: &[u8] = &[0, 4, 2, 0, 0, 0];
/// A dispatch map (`type a . b : verdict`): key and data byte order unset, the key's
/// typeof record and data interval 0 that nft writes for a concatenation.
const UDATA_DISPATCH_MAP: &[u8] = &[
    0, 4, 0, 0, 0, 0, 1, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
];
/// A numgen vmap's anonymous map: key in host byte order (1), data typeof, interval 0.
const UDATA_NUMGEN_MAP: &[u8] = &[
    0, 4, 1, 0, 0, 0, 1, 4, 0, 0, 0, 0, 4, 8, 0, 4, 1, 0, 0, 0, 1, 0, 6, 4, 0, 0, 0, 0,
];
/// NFTNL_UDATA_SET_COMMENT.
const UDATA_SET_COMMENT: u8 = 7;

/// A comment as libnftnl's user data entry: type 0 (comment, for rules and chains),
/// length, the string with its NUL.
fn comment_udata(kind: u8, comment: &str) -> Vec<u8> {
    let mut u = vec![kind, (comment.len() + 1) as u8];
    u.extend_from_slice(comment.as_bytes());
    u.push(0);
    u
}

/// A rule's expressions being written into a message.
struct Exprs<'a>(&'a mut Msg);

impl Exprs<'_> {
    fn expr(&mut self, name: &str, body: impl FnOnce(&mut Msg)) {
        let e = self.0.begin(NFTA_LIST_ELEM);
        self.0.str(NFTA_EXPR_NAME, name);
        let d = self.0.begin(NFTA_EXPR_DATA);
        body(self.0);
        self.0.end(d);
        self.0.end(e);
    }
    fn meta_load(&mut self, key: u32, dreg: u32) {
        self.expr("meta", |m| {
            m.be32(META_KEY, key);
            m.be32(META_DREG, dreg);
        });
    }
    fn meta_set(&mut self, key: u32, sreg: u32) {
        self.expr("meta", |m| {
            m.be32(META_KEY, key);
            m.be32(META_SREG, sreg);
        });
    }
    fn cmp(&mut self, op: u32, data: &[u8]) {
        self.expr("cmp", |m| {
            m.be32(CMP_SREG, REG_1);
            m.be32(CMP_OP, op);
            let d = m.begin(CMP_DATA);
            m.attr(NFTA_DATA_VALUE, data);
            m.end(d);
        });
    }
    fn payload(&mut self, dreg: u32, base: u32, offset: u32, len: u32) {
        self.expr("payload", |m| {
            m.be32(PAYLOAD_DREG, dreg);
            m.be32(PAYLOAD_BASE, base);
            m.be32(PAYLOAD_OFFSET, offset);
            m.be32(PAYLOAD_LEN, len);
        });
    }
    /// `reg 1 = (reg 1 & mask) ^ xor` on a 32-bit value (host byte order, as marks are).
    fn bitwise(&mut self, mask: u32, xor: u32) {
        self.expr("bitwise", |m| {
            m.be32(1, REG_1); // SREG
            m.be32(2, REG_1); // DREG
            m.be32(6, 0); // OP: NFT_BITWISE_BOOL
            m.be32(3, 4); // LEN
            let k = m.begin(4); // MASK
            m.attr(NFTA_DATA_VALUE, &mask.to_ne_bytes());
            m.end(k);
            let x = m.begin(5); // XOR
            m.attr(NFTA_DATA_VALUE, &xor.to_ne_bytes());
            m.end(x);
        });
    }
    /// A lookup in `set` (by name, or by batch-local id for an anonymous set made in
    /// the same batch); with a verdict result for a map.
    fn lookup(&mut self, set: &str, set_id: Option<u32>, map: bool) {
        self.lookup_to(set, set_id, map.then_some(REG_VERDICT));
    }
    /// A lookup whose result (a map's data) goes to `dreg`, if any.
    fn lookup_to(&mut self, set: &str, set_id: Option<u32>, dreg: Option<u32>) {
        self.expr("lookup", |m| {
            m.be32(LOOKUP_SREG, REG_1);
            if let Some(d) = dreg {
                m.be32(LOOKUP_DREG, d);
            }
            m.str(LOOKUP_SET, set);
            if let Some(id) = set_id {
                m.be32(LOOKUP_SET_ID, id);
            }
        });
    }
    fn goto(&mut self, chain: &str) {
        self.expr("immediate", |m| {
            m.be32(IMM_DREG, REG_VERDICT);
            let d = m.begin(IMM_DATA);
            verdict_goto(m, chain);
            m.end(d);
        });
    }
    fn immediate(&mut self, dreg: u32, data: &[u8]) {
        self.expr("immediate", |m| {
            m.be32(IMM_DREG, dreg);
            let d = m.begin(IMM_DATA);
            m.attr(NFTA_DATA_VALUE, data);
            m.end(d);
        });
    }
    /// `meta nfproto ipv4|ipv6`: the dependency nft adds before an `ip`/`ip6` match in
    /// an inet table.
    fn nfproto(&mut self, v6: bool) {
        self.meta_load(META_NFPROTO, REG_1);
        self.cmp(CMP_EQ, &[if v6 { 10 } else { 2 }]);
    }
    fn l4proto(&mut self, proto: Proto) {
        self.meta_load(META_L4PROTO, REG_1);
        self.cmp(CMP_EQ, &[proto_number(proto)]);
    }
    /// `ip saddr` / `ip6 saddr` (with its nfproto dependency) into reg 1.
    fn saddr(&mut self, v6: bool) {
        self.nfproto(v6);
        if v6 {
            self.payload(REG_1, BASE_NETWORK, 8, 16);
        } else {
            self.payload(REG_1, BASE_NETWORK, 12, 4);
        }
    }
    fn th_dport(&mut self, dreg: u32) {
        self.payload(dreg, BASE_TRANSPORT, 2, 2);
    }
}

fn verdict_goto(m: &mut Msg, chain: &str) {
    let v = m.begin(NFTA_DATA_VERDICT);
    m.be32(NFTA_VERDICT_CODE, NFT_GOTO);
    m.str(NFTA_VERDICT_CHAIN, chain);
    m.end(v);
}

fn proto_number(p: Proto) -> u8 {
    match p {
        Proto::Tcp => libc::IPPROTO_TCP as u8,
        Proto::Udp => libc::IPPROTO_UDP as u8,
    }
}

fn ip_bytes(ip: std::net::IpAddr) -> Vec<u8> {
    match ip {
        std::net::IpAddr::V4(a) => a.octets().to_vec(),
        std::net::IpAddr::V6(a) => a.octets().to_vec(),
    }
}

/// The expressions of one rule shape, as nft 1.0.6 makes them. `anon` is the
/// batch-local id of the anonymous map a `Pick` looks up (made just before).
fn rule_exprs(x: &mut Exprs<'_>, rule: &SvcRule, anon: Option<(&str, u32)>) {
    // (an interface name longer than 15 bytes is refused before: `rule_msg`)
    match rule {
        SvcRule::HairpinMark { backend } => {
            x.saddr(backend.is_ipv6());
            x.cmp(CMP_EQ, &ip_bytes(*backend));
            x.meta_load(META_MARK, REG_1);
            x.bitwise(!HAIRPIN_MARK, HAIRPIN_MARK);
            x.meta_set(META_MARK, REG_1);
        }
        SvcRule::AffinityGoto { v6, set, chain } => {
            x.saddr(*v6);
            x.lookup(set, None, false);
            x.goto(chain);
        }
        SvcRule::AffinityUpdate { v6, set } => {
            x.saddr(*v6);
            x.expr("dynset", |m| {
                m.be32(DYNSET_SREG_KEY, REG_1);
                m.be32(DYNSET_OP, DYNSET_OP_UPDATE);
                m.str(DYNSET_SET_NAME, set);
            });
        }
        SvcRule::Dnat { proto, to, port } => {
            x.l4proto(*proto);
            x.immediate(REG_1, &ip_bytes(*to));
            x.immediate(REG_2, &port.to_be_bytes());
            x.expr("nat", |m| {
                m.be32(NAT_TYPE, NAT_DNAT);
                m.be32(NAT_FAMILY, if to.is_ipv6() { 10 } else { 2 });
                m.be32(NAT_REG_ADDR_MIN, REG_1);
                m.be32(NAT_REG_PROTO_MIN, REG_2);
                m.be32(NAT_FLAGS, NAT_PROTO_SPECIFIED);
            });
        }
        SvcRule::Pick { chains } => {
            x.expr("numgen", |m| {
                m.be32(NUMGEN_DREG, REG_1);
                m.be32(NUMGEN_MODULUS, chains.len() as u32);
                m.be32(NUMGEN_TYPE, NUMGEN_RANDOM);
                m.be32(NUMGEN_OFFSET, 0);
            });
            let (name, id) = anon.unwrap_or((ANON_MAP, 0));
            x.lookup(name, Some(id), true);
        }
        SvcRule::RejectTcpReset => {
            x.l4proto(Proto::Tcp);
            x.expr("reject", |m| {
                m.be32(REJECT_TYPE, REJECT_TCP_RST);
                m.attr(REJECT_ICMP_CODE, &[0]);
            });
        }
        SvcRule::RejectPortUnreachable => x.expr("reject", |m| {
            m.be32(REJECT_TYPE, REJECT_ICMPX);
            m.attr(REJECT_ICMP_CODE, &[ICMPX_PORT_UNREACH]);
        }),
        SvcRule::Dispatch { v6 } => {
            // `daddr . l4proto . dport`: each part in the register after the last one.
            x.nfproto(*v6);
            let map = if *v6 {
                x.payload(REG_1, BASE_NETWORK, 24, 16);
                x.meta_load(META_L4PROTO, REG_2);
                x.th_dport(REG32_05);
                DispatchMap::Svc6Dispatch
            } else {
                x.payload(REG_1, BASE_NETWORK, 16, 4);
                x.meta_load(META_L4PROTO, REG32_01);
                x.th_dport(REG32_02);
                DispatchMap::Svc4Dispatch
            };
            x.lookup(map.name(), None, true);
        }
        SvcRule::IngressDispatch { v6 } => {
            x.expr("fib", |m| {
                m.be32(FIB_FLAGS, FIB_F_DADDR);
                m.be32(FIB_RESULT, FIB_RESULT_ADDRTYPE);
                m.be32(FIB_DREG, REG_1);
            });
            x.cmp(CMP_EQ, &RTN_LOCAL.to_ne_bytes());
            x.nfproto(*v6);
            let map = if *v6 {
                x.payload(REG_1, BASE_NETWORK, 24, 16);
                x.cmp(CMP_NEQ, &std::net::Ipv6Addr::LOCALHOST.octets());
                DispatchMap::Svc6Ingress
            } else {
                DispatchMap::Svc4Ingress
            };
            x.meta_load(META_L4PROTO, REG_1);
            x.th_dport(REG32_01);
            x.lookup(map.name(), None, true);
        }
        SvcRule::OwnNetworkOnly { bridge } => {
            // (`nft --debug=netlink`: iifname is compared as 16 zero-padded bytes)
            let mut name = bridge.as_bytes().to_vec();
            name.resize(16, 0);
            x.meta_load(META_IIFNAME, REG_1);
            x.cmp(CMP_NEQ, &name);
            x.expr("fib", |m| {
                m.be32(FIB_FLAGS, FIB_F_SADDR);
                m.be32(FIB_RESULT, FIB_RESULT_ADDRTYPE);
                m.be32(FIB_DREG, REG_1);
            });
            x.cmp(CMP_NEQ, &RTN_LOCAL.to_ne_bytes());
            x.expr("immediate", |m| {
                m.be32(IMM_DREG, REG_VERDICT);
                let d = m.begin(IMM_DATA);
                let v = m.begin(NFTA_DATA_VERDICT);
                m.be32(NFTA_VERDICT_CODE, NF_DROP);
                m.end(v);
                m.end(d);
            });
        }
        SvcRule::MarkSet { mark } => {
            x.meta_load(META_MARK, REG_1);
            x.bitwise(!*mark, *mark);
            x.meta_set(META_MARK, REG_1);
        }
        SvcRule::PickDnat { map } => {
            // (`nft --debug=netlink`: each key part in the 32-bit register after the
            // previous one; the data `addr . port` comes back in reg 1 and the register
            // after the address)
            if !map.ingress {
                x.nfproto(map.v6);
            }
            x.l4proto(map.proto);
            let (proto_reg, numgen_reg) = match (map.ingress, map.v6) {
                (false, false) => {
                    x.payload(REG_1, BASE_NETWORK, 16, 4);
                    x.th_dport(REG32_01);
                    (REG32_01, REG32_02)
                }
                (false, true) => {
                    x.payload(REG_1, BASE_NETWORK, 24, 16);
                    x.th_dport(REG_2);
                    (REG_2, REG32_05)
                }
                (true, v6) => {
                    x.th_dport(REG_1);
                    (if v6 { REG_2 } else { REG32_01 }, REG32_01)
                }
            };
            x.expr("numgen", |m| {
                m.be32(NUMGEN_DREG, numgen_reg);
                m.be32(NUMGEN_MODULUS, map.n);
                m.be32(NUMGEN_TYPE, NUMGEN_RANDOM);
                m.be32(NUMGEN_OFFSET, 0);
            });
            x.lookup_to(&map.name(), None, Some(REG_1));
            x.expr("nat", |m| {
                m.be32(NAT_TYPE, NAT_DNAT);
                m.be32(NAT_FAMILY, if map.v6 { 10 } else { 2 });
                m.be32(NAT_REG_ADDR_MIN, REG_1);
                m.be32(NAT_REG_PROTO_MIN, proto_reg);
            });
        }
        SvcRule::Goto { chain } => x.goto(chain),
        SvcRule::HairpinSetMasquerade { v6 } => {
            x.nfproto(*v6);
            if *v6 {
                x.payload(REG_1, BASE_NETWORK, 8, 16);
                x.payload(REG_2, BASE_NETWORK, 24, 16);
            } else {
                x.payload(REG_1, BASE_NETWORK, 12, 4);
                x.payload(REG32_01, BASE_NETWORK, 16, 4);
            }
            x.lookup_to(hairpin_set(*v6), None, None);
            x.expr("masq", |_| {});
        }
        SvcRule::HairpinMasquerade => {
            x.meta_load(META_MARK, REG_1);
            x.bitwise(HAIRPIN_MARK, 0);
            x.cmp(CMP_EQ, &HAIRPIN_MARK.to_ne_bytes());
            x.expr("masq", |_| {});
        }
    }
}

/// The name nft gives an anonymous map; the kernel replaces `%d` with a free number.
/// Only the byte-for-byte tests use it: to find that number the kernel scans every set
/// of the table (`nf_tables_set_alloc_name`), once per anonymous set, which makes a
/// full load quadratic in the number of services (29 s at 5,000 × 4). `anon_name`
/// names each map after the one rule that uses it instead.
const ANON_MAP: &str = "__map%d";

/// The name of the anonymous map of the `Pick` rule of `chain`: unique in a batch (a
/// chain is refilled at most once per batch) and free in the kernel (the chain's
/// previous rule, and with it its map, is flushed earlier in the same transaction).
/// Anonymous sets are listed inline, so their names never show.
fn anon_name(chain: &str, percent: bool) -> String {
    if percent {
        ANON_MAP.to_string()
    } else {
        format!("__map{chain}")
    }
}

/// A key of concatenated parts, each padded to 4 bytes (as nft_elements does).
fn concat_key(parts: &[Part]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for p in parts {
        let mut b = encode_part(p)?;
        b.resize(b.len().next_multiple_of(4), 0);
        out.extend(b);
    }
    Some(out)
}

/// The key types of a dispatch map (nft datatype numbers, 6 bits a part) and length.
fn map_key(map: DispatchMap) -> (u32, u32) {
    let proto_port = (TYPE_INET_PROTOCOL << 6) | TYPE_INET_SERVICE;
    match map {
        DispatchMap::Svc4Dispatch => ((TYPE_IPADDR << 12) | proto_port, 12),
        DispatchMap::Svc6Dispatch => ((TYPE_IP6ADDR << 12) | proto_port, 24),
        DispatchMap::Svc4Ingress | DispatchMap::Svc6Ingress => (proto_port, 8),
    }
}

/// Why a batch was not encoded: a value the kernel cannot hold (a name or comment too
/// long, a key part of another type). The caller hands such a batch to libnftables,
/// which reports it in its own words.
#[derive(Debug, PartialEq, Eq)]
pub struct Unencodable(pub String);

/// Writes a batch's messages: (bytes, and per message its sequence number and the
/// index of the command it came from).
pub struct Encoded {
    pub bytes: Vec<u8>,
    pub seqs: Vec<(u32, usize)>,
}

/// Encodes `cmds` as one nfnetlink batch (BATCH_BEGIN ... BATCH_END), numbering
/// messages from `next_seq`. Pure: unit-tested without a kernel.
pub fn encode(cmds: &[&SvcCmd], next_seq: impl FnMut() -> u32) -> Result<Encoded, Unencodable> {
    encode_from(cmds, next_seq, 0, false)
}

/// `encode`, numbering the sets it makes from `set_id_base + 1` (tests match nft's ids).
fn encode_from(
    cmds: &[&SvcCmd],
    mut next_seq: impl FnMut() -> u32,
    set_id_base: u32,
    percent_names: bool,
) -> Result<Encoded, Unencodable> {
    let mut out = Vec::with_capacity(cmds.len() * 192);
    let mut seqs = Vec::with_capacity(cmds.len() + cmds.len() / 4);
    let res = NFNL_SUBSYS_NFTABLES;
    out.extend(Msg::new(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, next_seq(), 0, res).finish());
    let mut set_id = set_id_base;
    let last = cmds.len().saturating_sub(1);
    for (i, cmd) in cmds.iter().enumerate() {
        let ack = if i == last { NLM_F_ACK } else { 0 };
        let mut msg = |kind: u16, flags: u16, seqs: &mut Vec<(u32, usize)>| {
            let seq = next_seq();
            seqs.push((seq, i));
            Msg::new(nft_type(kind), NLM_F_REQUEST | flags, seq, INET, 0)
        };
        match cmd {
            SvcCmd::AddChain { name, kind } => {
                let mut m = msg(NFT_MSG_NEWCHAIN, NLM_F_CREATE | ack, &mut seqs);
                m.str(NFTA_CHAIN_TABLE, TABLE);
                m.str(NFTA_CHAIN_NAME, checked_name(name)?);
                match kind {
                    ChainKind::Base { hook, priority } => {
                        m.str(NFTA_CHAIN_TYPE, "nat");
                        m.be32(NFTA_CHAIN_POLICY, NF_ACCEPT);
                        let h = m.begin(NFTA_CHAIN_HOOK);
                        m.be32(NFTA_HOOK_HOOKNUM, hook_number(*hook));
                        m.be32(NFTA_HOOK_PRIORITY, priority.value() as u32);
                        m.end(h);
                    }
                    ChainKind::Regular { comment } => {
                        m.attr(NFTA_CHAIN_USERDATA, &comment_udata(0, checked_comment(comment)?));
                    }
                }
                out.extend(m.finish());
            }
            SvcCmd::FlushChain(chain) => {
                let mut m = msg(NFT_MSG_DELRULE, ack, &mut seqs);
                m.str(NFTA_RULE_TABLE, TABLE);
                m.str(NFTA_RULE_CHAIN, checked_name(chain)?);
                out.extend(m.finish());
            }
            SvcCmd::DeleteChain(chain) => {
                let mut m = msg(NFT_MSG_DELCHAIN, ack, &mut seqs);
                m.str(NFTA_CHAIN_TABLE, TABLE);
                m.str(NFTA_CHAIN_NAME, checked_name(chain)?);
                out.extend(m.finish());
            }
            SvcCmd::AddRule { chain, rule } => {
                let name = anon_name(chain, percent_names);
                let anon = match &rule.rule {
                    SvcRule::Pick { chains } => {
                        set_id += 1;
                        out.extend(numgen_map(chains, &name, set_id, &mut msg, &mut seqs)?);
                        Some((name.as_str(), set_id))
                    }
                    _ => None,
                };
                let mut m = msg(NFT_MSG_NEWRULE, NLM_F_CREATE | NLM_F_APPEND | ack, &mut seqs);
                rule_msg(&mut m, chain, rule, anon)?;
                out.extend(m.finish());
            }
            SvcCmd::AddSet { name, set } => {
                set_id += 1;
                let mut m = msg(NFT_MSG_NEWSET, NLM_F_CREATE | ack, &mut seqs);
                affinity_set(&mut m, name, set, set_id)?;
                out.extend(m.finish());
            }
            SvcCmd::DeleteSet(name) => {
                let mut m = msg(NFT_MSG_DELSET, ack, &mut seqs);
                m.str(NFTA_SET_TABLE, TABLE);
                m.str(NFTA_SET_NAME, checked_name(name)?);
                out.extend(m.finish());
            }
            SvcCmd::AddMap(map) => {
                set_id += 1;
                let (key_type, key_len) = map_key(*map);
                let mut m = msg(NFT_MSG_NEWSET, NLM_F_CREATE | ack, &mut seqs);
                m.str(NFTA_SET_TABLE, TABLE);
                m.str(NFTA_SET_NAME, map.name());
                m.be32(NFTA_SET_FLAGS, SET_MAP);
                m.be32(NFTA_SET_KEY_TYPE, key_type);
                m.be32(NFTA_SET_KEY_LEN, key_len);
                m.be32(NFTA_SET_DATA_TYPE, TYPE_VERDICT);
                m.be32(NFTA_SET_DATA_LEN, 0);
                m.be32(NFTA_SET_ID, set_id);
                let mut u = UDATA_DISPATCH_MAP.to_vec();
                u.extend(comment_udata(UDATA_SET_COMMENT, map.comment()));
                m.attr(NFTA_SET_USERDATA, &u);
                out.extend(m.finish());
            }
            SvcCmd::FlushMap(map) => {
                let mut m = msg(NFT_MSG_DELSETELEM, ack, &mut seqs);
                // (nft's order; the kernel takes either)
                m.str(NFTA_SET_ELEM_LIST_SET, map.name());
                m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                out.extend(m.finish());
            }
            SvcCmd::MapElements { add, map, elems } => {
                let (kind, flags) = if *add {
                    (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
                } else {
                    (NFT_MSG_DELSETELEM, 0)
                };
                let (_, key_len) = map_key(*map);
                // An attribute's length is 16 bits: a long element list goes in several
                // messages, as libnftables splits it too.
                let chunks: Vec<_> = elems.chunks(ELEMS_PER_MSG).collect();
                for (c, chunk) in chunks.iter().enumerate() {
                    let ack = if c + 1 == chunks.len() { ack } else { 0 };
                    let mut m = msg(kind, flags | ack, &mut seqs);
                    m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                    m.str(NFTA_SET_ELEM_LIST_SET, map.name());
                    let list = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
                    for (i, MapElement { key, goto }) in chunk.iter().enumerate() {
                        let k = concat_key(key)
                            .filter(|k| k.len() == key_len as usize)
                            .ok_or_else(|| Unencodable(format!("key of {map}: {key:?}")))?;
                        element(&mut m, i, &k, add.then_some(goto.as_str()))?;
                    }
                    m.end(list);
                    out.extend(m.finish());
                }
            }
            SvcCmd::AddPickMap(map) => {
                set_id += 1;
                let mut m = msg(NFT_MSG_NEWSET, NLM_F_CREATE | ack, &mut seqs);
                pick_map(&mut m, map, set_id);
                out.extend(m.finish());
            }
            SvcCmd::AddHairpinSet { v6 } => {
                set_id += 1;
                let mut m = msg(NFT_MSG_NEWSET, NLM_F_CREATE | ack, &mut seqs);
                m.str(NFTA_SET_TABLE, TABLE);
                m.str(NFTA_SET_NAME, hairpin_set(*v6));
                m.be32(NFTA_SET_FLAGS, 0);
                let (ty, len) = if *v6 {
                    ((TYPE_IP6ADDR << 6) | TYPE_IP6ADDR, 32)
                } else {
                    ((TYPE_IPADDR << 6) | TYPE_IPADDR, 8)
                };
                m.be32(NFTA_SET_KEY_TYPE, ty);
                m.be32(NFTA_SET_KEY_LEN, len);
                m.be32(NFTA_SET_ID, set_id);
                m.attr(NFTA_SET_USERDATA, UDATA_HAIRPIN_SET);
                out.extend(m.finish());
            }
            SvcCmd::FlushSet { name, .. } => {
                let mut m = msg(NFT_MSG_DELSETELEM, ack, &mut seqs);
                m.str(NFTA_SET_ELEM_LIST_SET, checked_name(name)?);
                m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
                out.extend(m.finish());
            }
            SvcCmd::PickElements { add, map, elems } => {
                let name = map.name();
                let list: Vec<(Vec<u8>, Option<Vec<u8>>)> = elems
                    .iter()
                    .map(|e| pick_element(map, e, *add))
                    .collect::<Result<_, _>>()?;
                elements_msgs(&mut out, &mut msg, &mut seqs, ack, *add, &name, &list);
            }
            SvcCmd::HairpinElements { add, v6, backends } => {
                let list: Vec<(Vec<u8>, Option<Vec<u8>>)> = backends
                    .iter()
                    .map(|b| {
                        if b.is_ipv6() != *v6 {
                            return Err(Unencodable(format!("{b} in {}", hairpin_set(*v6))));
                        }
                        let mut k = ip_bytes(*b);
                        k.extend(ip_bytes(*b));
                        Ok((k, None))
                    })
                    .collect::<Result<_, _>>()?;
                elements_msgs(&mut out, &mut msg, &mut seqs, ack, *add, hairpin_set(*v6), &list);
            }
        }
    }
    out.extend(Msg::new(NFNL_MSG_BATCH_END, NLM_F_REQUEST, next_seq(), 0, res).finish());
    Ok(Encoded { bytes: out, seqs })
}

/// NEWSETELEM/DELSETELEM messages of `(key, data)` elements of a data map or set, split
/// as `MapElements` is.
fn elements_msgs(
    out: &mut Vec<u8>,
    msg: &mut impl FnMut(u16, u16, &mut Vec<(u32, usize)>) -> Msg,
    seqs: &mut Vec<(u32, usize)>,
    ack: u16,
    add: bool,
    set: &str,
    list: &[(Vec<u8>, Option<Vec<u8>>)],
) {
    let (kind, flags) = if add {
        (NFT_MSG_NEWSETELEM, NLM_F_CREATE)
    } else {
        (NFT_MSG_DELSETELEM, 0)
    };
    let chunks: Vec<_> = list.chunks(ELEMS_PER_MSG).collect();
    for (c, chunk) in chunks.iter().enumerate() {
        let ack = if c + 1 == chunks.len() { ack } else { 0 };
        let mut m = msg(kind, flags | ack, seqs);
        m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
        m.str(NFTA_SET_ELEM_LIST_SET, set);
        let l = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
        for (i, (key, data)) in chunk.iter().enumerate() {
            let e = m.begin(NFTA_LIST_ELEM + i as u16);
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
        m.end(l);
        out.extend(m.finish());
    }
}

/// A port as a key part: big endian, padded to 4 bytes.
fn port_part(port: u16) -> [u8; 4] {
    let p = port.to_be_bytes();
    [p[0], p[1], 0, 0]
}

/// An element of a backend map: key `vip . port . slot` (`port . slot` for ingress; the
/// slot in host byte order, as numgen writes it), data `addr . port`.
fn pick_element(
    map: &PickMap,
    e: &PickElement,
    add: bool,
) -> Result<(Vec<u8>, Option<Vec<u8>>), Unencodable> {
    let fits = |ip: std::net::IpAddr| ip.is_ipv6() == map.v6;
    let vip_ok = match e.vip {
        Some(v) => !map.ingress && fits(v),
        None => map.ingress,
    };
    if !vip_ok || !fits(e.to) || e.slot >= map.n {
        return Err(Unencodable(format!("element {e:?} of {}", map.name())));
    }
    let mut key = e.vip.map(ip_bytes).unwrap_or_default();
    key.extend(port_part(e.port));
    key.extend(e.slot.to_ne_bytes());
    let data = add.then(|| {
        let mut d = ip_bytes(e.to);
        d.extend(port_part(e.to_port));
        d
    });
    Ok((key, data))
}

/// libnftnl's user data TLV: type, length, value.
fn tlv(out: &mut Vec<u8>, t: u8, v: &[u8]) {
    out.push(t);
    out.push(v.len() as u8);
    out.extend_from_slice(v);
}

/// nft's `typeof` record of one expression: its kind and its own records.
fn typeof_expr(out: &mut Vec<u8>, i: u8, kind: u32, fields: &[u32]) {
    let mut inner = Vec::new();
    for (j, f) in fields.iter().enumerate() {
        tlv(&mut inner, j as u8, &f.to_ne_bytes());
    }
    let mut e = Vec::new();
    tlv(&mut e, 0, &kind.to_ne_bytes());
    tlv(&mut e, 1, &inner);
    tlv(out, i, &e);
}

/// nft's `typeof` record of a concatenation of `parts` (kind, fields).
fn typeof_concat(parts: &[(u32, Vec<u32>)]) -> Vec<u8> {
    let mut inner = Vec::new();
    for (i, (kind, fields)) in parts.iter().enumerate() {
        typeof_expr(&mut inner, i as u8, *kind, fields);
    }
    let mut out = Vec::new();
    tlv(&mut out, 0, &EXPR_CONCAT.to_ne_bytes());
    tlv(&mut out, 1, &inner);
    out
}

// nft's expression kinds and protocol/field numbers in `typeof` records (nft 1.0.6).
const EXPR_CONCAT: u32 = 13;
const EXPR_PAYLOAD: u32 = 7;
const EXPR_NUMGEN: u32 = 23;
const PROTO_IP: u32 = 12;
const PROTO_IP6: u32 = 13;
const PROTO_TCP: u32 = 8;
const PROTO_UDP: u32 = 6;
const IP_DADDR: u32 = 12;
const IP6_DADDR: u32 = 9;
const TH_DPORT: u32 = 2;

/// The set user data nft writes for a backend map's `typeof` (which `nft list` reads back).
fn pick_udata(map: &PickMap) -> Vec<u8> {
    let daddr = if map.v6 {
        (EXPR_PAYLOAD, vec![PROTO_IP6, IP6_DADDR])
    } else {
        (EXPR_PAYLOAD, vec![PROTO_IP, IP_DADDR])
    };
    let l4 = match map.proto {
        Proto::Tcp => PROTO_TCP,
        Proto::Udp => PROTO_UDP,
    };
    let dport = (EXPR_PAYLOAD, vec![l4, TH_DPORT]);
    let numgen = (EXPR_NUMGEN, vec![NUMGEN_RANDOM, map.n, 0]);
    let key = if map.ingress {
        vec![dport.clone(), numgen]
    } else {
        vec![daddr.clone(), dport.clone(), numgen]
    };
    let mut u = Vec::new();
    tlv(&mut u, 0, &0u32.to_ne_bytes()); // key byte order
    tlv(&mut u, 1, &0u32.to_ne_bytes()); // data byte order
    tlv(&mut u, 3, &typeof_concat(&key));
    tlv(&mut u, 4, &typeof_concat(&[daddr, dport]));
    tlv(&mut u, 6, &0u32.to_ne_bytes()); // data interval
    u
}

/// The NEWSET of a backend map.
fn pick_map(m: &mut Msg, map: &PickMap, id: u32) {
    let (addr_type, addr_len) = if map.v6 {
        (TYPE_IP6ADDR, 16)
    } else {
        (TYPE_IPADDR, 4)
    };
    let slot = (TYPE_INET_SERVICE << 6) | TYPE_INTEGER;
    let (key_type, key_len) = if map.ingress {
        (slot, 8)
    } else {
        ((addr_type << 12) | slot, addr_len + 8)
    };
    m.str(NFTA_SET_TABLE, TABLE);
    m.str(NFTA_SET_NAME, &map.name());
    m.be32(NFTA_SET_FLAGS, SET_MAP);
    m.be32(NFTA_SET_KEY_TYPE, key_type);
    m.be32(NFTA_SET_KEY_LEN, key_len);
    m.be32(NFTA_SET_DATA_TYPE, (addr_type << 6) | TYPE_INET_SERVICE);
    m.be32(NFTA_SET_DATA_LEN, addr_len + 4);
    m.be32(NFTA_SET_ID, id);
    m.attr(NFTA_SET_USERDATA, &pick_udata(map));
}

/// A hairpin set's user data (`type a . b`: key byte order unset, an empty typeof).
const UDATA_HAIRPIN_SET: &[u8] = &[0, 4, 0, 0, 0, 0, 3, 8, 0, 4, 13, 0, 0, 0, 1, 0];

/// Element `i` of a list: libnftnl numbers the nests 1, 2, ... (the kernel reads any).
fn element(m: &mut Msg, i: usize, key: &[u8], goto: Option<&str>) -> Result<(), Unencodable> {
    let e = m.begin(NFTA_LIST_ELEM + i as u16);
    let k = m.begin(NFTA_SET_ELEM_KEY);
    m.attr(NFTA_DATA_VALUE, key);
    m.end(k);
    if let Some(chain) = goto {
        let d = m.begin(NFTA_SET_ELEM_DATA);
        verdict_goto(m, checked_name(chain)?);
        m.end(d);
    }
    m.end(e);
    Ok(())
}

/// The anonymous map of a `numgen random mod N vmap { ... }` and its elements: two
/// messages before the rule that looks it up by `id`.
fn numgen_map(
    chains: &[String],
    name: &str,
    id: u32,
    msg: &mut impl FnMut(u16, u16, &mut Vec<(u32, usize)>) -> Msg,
    seqs: &mut Vec<(u32, usize)>,
) -> Result<Vec<u8>, Unencodable> {
    if chains.is_empty() {
        return Err(Unencodable("numgen vmap without a chain".into()));
    }
    let mut m = msg(NFT_MSG_NEWSET, NLM_F_CREATE, seqs);
    m.str(NFTA_SET_TABLE, TABLE);
    m.str(NFTA_SET_NAME, checked_name(name)?);
    m.be32(NFTA_SET_FLAGS, SET_ANONYMOUS | SET_CONSTANT | SET_MAP);
    m.be32(NFTA_SET_KEY_TYPE, TYPE_INTEGER);
    m.be32(NFTA_SET_KEY_LEN, 4);
    m.be32(NFTA_SET_DATA_TYPE, TYPE_VERDICT);
    m.be32(NFTA_SET_DATA_LEN, 0);
    m.be32(NFTA_SET_ID, id);
    let d = m.begin(NFTA_SET_DESC);
    m.be32(NFTA_SET_DESC_SIZE, chains.len() as u32);
    m.end(d);
    m.attr(NFTA_SET_USERDATA, UDATA_NUMGEN_MAP);
    let mut out = m.finish();
    let mut m = msg(NFT_MSG_NEWSETELEM, NLM_F_CREATE, seqs);
    m.str(NFTA_SET_ELEM_LIST_TABLE, TABLE);
    m.str(NFTA_SET_ELEM_LIST_SET, name);
    m.be32(NFTA_SET_ELEM_LIST_SET_ID, id);
    let list = m.begin(NFTA_SET_ELEM_LIST_ELEMENTS);
    for (i, c) in chains.iter().enumerate() {
        // numgen's result is a host-order integer.
        element(&mut m, i, &(i as u32).to_ne_bytes(), Some(c))?;
    }
    m.end(list);
    out.extend(m.finish());
    Ok(out)
}

fn rule_msg(
    m: &mut Msg,
    chain: &str,
    rule: &SvcRuleLine,
    anon: Option<(&str, u32)>,
) -> Result<(), Unencodable> {
    m.str(NFTA_RULE_TABLE, TABLE);
    m.str(NFTA_RULE_CHAIN, checked_name(chain)?);
    if let SvcRule::OwnNetworkOnly { bridge } = &rule.rule {
        if bridge.is_empty() || bridge.len() > 15 || bridge.contains('\0') {
            return Err(Unencodable(format!("interface name {bridge:?}")));
        }
    }
    let list = m.begin(NFTA_RULE_EXPRESSIONS);
    rule_exprs(&mut Exprs(m), &rule.rule, anon);
    m.end(list);
    if let Some(c) = &rule.comment {
        m.attr(NFTA_RULE_USERDATA, &comment_udata(0, checked_comment(c)?));
    }
    Ok(())
}

fn affinity_set(m: &mut Msg, name: &str, set: &AffinitySet, id: u32) -> Result<(), Unencodable> {
    m.str(NFTA_SET_TABLE, TABLE);
    m.str(NFTA_SET_NAME, checked_name(name)?);
    m.be32(NFTA_SET_FLAGS, SET_TIMEOUT | SET_EVAL);
    let (ty, len) = if set.v6 {
        (TYPE_IP6ADDR, 16)
    } else {
        (TYPE_IPADDR, 4)
    };
    m.be32(NFTA_SET_KEY_TYPE, ty);
    m.be32(NFTA_SET_KEY_LEN, len);
    m.be32(NFTA_SET_ID, id);
    m.attr(
        NFTA_SET_TIMEOUT,
        &(u64::from(set.timeout_secs) * 1000).to_be_bytes(),
    );
    let mut u = UDATA_ADDR_SET.to_vec();
    u.extend(comment_udata(UDATA_SET_COMMENT, checked_comment(&set.comment)?));
    m.attr(NFTA_SET_USERDATA, &u);
    Ok(())
}

fn hook_number(h: Hook) -> u32 {
    match h {
        Hook::Prerouting => 0,
        Hook::Output => 3,
        Hook::Postrouting => 4,
    }
}

/// The kernel's limit on chain and set names (NFT_NAME_MAXLEN, with the NUL).
fn checked_name(s: &str) -> Result<&str, Unencodable> {
    if s.is_empty() || s.len() > 255 || s.contains('\0') {
        return Err(Unencodable(format!("name {s:?}")));
    }
    Ok(s)
}

/// nft's limit on comments (NFT_USERDATA_MAXLEN is 256 for the whole user data; nft
/// itself refuses comments over 128 bytes).
fn checked_comment(s: &str) -> Result<&str, Unencodable> {
    if s.len() > 128 || s.contains('\0') {
        return Err(Unencodable(format!("comment {s:?}")));
    }
    Ok(s)
}

/// Elements per NEWSETELEM/DELSETELEM message: an element is at most ~300 bytes (a
/// 255-byte chain name), and the list's nested attribute must stay under 64 KiB.
const ELEMS_PER_MSG: usize = 200;

/// Longest command text kept in an error (an element list can be thousands long).
const MAX_ERR_CMD: usize = 240;

impl Conn {
    /// Sends the service commands as one transaction: all applied, or none and the
    /// error of the first command the kernel refused. `Ok(false)`: not encodable (use
    /// libnftables).
    pub fn apply_svc(&mut self, cmds: &[&SvcCmd]) -> Result<bool, KernelError> {
        if cmds.is_empty() {
            return Ok(true);
        }
        let enc = match encode(cmds, || self.next_seq()) {
            Ok(e) => e,
            Err(Unencodable(why)) => {
                tracing::debug!(%why, "service batch left to libnftables");
                return Ok(false);
            }
        };
        self.grow_sndbuf(enc.bytes.len())?;
        self.sock.send(&enc.bytes, 0).map_err(|e| io("send", e))?;
        let last_seq = enc.seqs.last().map(|s| s.0);
        let mut acked = false;
        let mut lost = false;
        let mut failed: Option<(usize, i32)> = None;
        // The kernel handles the whole batch inside that send: every answer is queued.
        loop {
            self.buf.clear();
            match self.sock.recv(&mut self.buf, libc::MSG_DONTWAIT) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                // More errors than the receive buffer holds: the queue keeps the first
                // ones, which name the command that failed.
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    lost = true;
                    continue;
                }
                Err(e) => return Err(io("recv", e)),
            }
            if self.buf.is_empty() {
                break;
            }
            for (kind, s, payload) in messages(&self.buf) {
                if kind != NLMSG_ERROR {
                    continue;
                }
                match errno_of(payload) {
                    Some(0) if Some(s) == last_seq => acked = true,
                    Some(0) => {}
                    Some(e) => {
                        // The first refused command; a failed commit answers on the
                        // batch's own sequence number (no command).
                        let at = enc.seqs.iter().find(|(q, _)| *q == s).map_or(usize::MAX, |x| x.1);
                        if failed.is_none_or(|(i, _)| at < i) {
                            failed = Some((at, e));
                        }
                    }
                    None => return Err(KernelError::Nft("malformed nfnetlink answer".into())),
                }
            }
        }
        // Whatever this batch freed, the socket's last close may wait for (`detach`).
        if cmds.iter().any(|c| {
            matches!(
                c,
                SvcCmd::FlushChain(_)
                    | SvcCmd::DeleteChain(_)
                    | SvcCmd::DeleteSet(_)
                    | SvcCmd::FlushMap(_)
                    | SvcCmd::FlushSet { .. }
                    | SvcCmd::MapElements { add: false, .. }
                    | SvcCmd::PickElements { add: false, .. }
                    | SvcCmd::HairpinElements { add: false, .. }
            )
        }) {
            self.deleted = true;
        }
        if let Some((at, e)) = failed {
            let what = cmds
                .get(at)
                .map_or_else(|| "commit".to_string(), |c| c.to_string());
            let mut what = what;
            if what.len() > MAX_ERR_CMD {
                let mut cut = MAX_ERR_CMD;
                while !what.is_char_boundary(cut) {
                    cut -= 1;
                }
                what.truncate(cut);
                what.push('…');
            }
            return Err(KernelError::Nft(format!(
                "{what}: {}",
                std::io::Error::from_raw_os_error(e)
            )));
        }
        if lost {
            return Err(io("recv", std::io::Error::from_raw_os_error(libc::ENOBUFS)));
        }
        if !acked {
            return Err(KernelError::NfnlBatch {
                acked: 0,
                sent: cmds.len(),
            });
        }
        Ok(true)
    }

    /// A netlink message must fit the socket's send buffer whole (EMSGSIZE otherwise),
    /// and a full load of 10,000 services is tens of megabytes: grow it, as
    /// libnftables does (SO_SNDBUFFORCE, needing CAP_NET_ADMIN like the batch itself).
    fn grow_sndbuf(&mut self, len: usize) -> Result<(), KernelError> {
        use std::os::fd::AsRawFd;
        const DEFAULT: usize = 200 * 1024;
        if len + 4096 < DEFAULT {
            return Ok(());
        }
        let want = libc::c_int::try_from(len + 65536).unwrap_or(libc::c_int::MAX / 2);
        // SAFETY: setsockopt on our own socket with a c_int value of the right size.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_SNDBUFFORCE,
                (&want as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io("setsockopt SO_SNDBUFFORCE", std::io::Error::last_os_error()));
        }
        // An error echoes the refused message whole unless capped, and one message (a
        // dispatch map's elements at 10,000 services) can outgrow the receive buffer;
        // the sequence number is all this needs.
        let one: libc::c_int = 1;
        // SAFETY: as above.
        let rc = unsafe {
            libc::setsockopt(
                self.sock.as_raw_fd(),
                libc::SOL_NETLINK,
                libc::NETLINK_CAP_ACK,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc != 0 {
            return Err(io("setsockopt NETLINK_CAP_ACK", std::io::Error::last_os_error()));
        }
        Ok(())
    }
}

#[cfg(test)]
#[path = "nft_svc_tests.rs"]
mod tests;
