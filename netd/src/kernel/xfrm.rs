//! IPsec (XFRM) over netlink: the ESP security associations and the policies of an
//! encrypted overlay network (`cluster::ipsec` decides which; this applies them).
//!
//! A small client of our own on a `NETLINK_XFRM` socket: the messages are a handful of
//! fixed C structs (`xfrm_usersa_info`, `xfrm_userpolicy_info`, …) plus two attributes,
//! and the `netlink-packet-xfrm` crate sits on an older `netlink-packet-core` than the
//! rtnetlink code uses, so two copies of the core would be linked for five messages.
//! The struct layouts are the x86_64/aarch64 ones of `<linux/xfrm.h>` (offsets are
//! written out below and checked against `ip xfrm` in the VM lane's tests).
//!
//! Everything netd makes carries its marks: SAs the request id `REQID`, policies the
//! mark `MARK` (which is also what selects them: only VXLAN packets of an encrypted
//! network are marked, by nftables, so a plain network on the same port stays plain).
//! Listing filters on those, so a sweep never touches an operator's own IPsec.

use std::net::Ipv4Addr;

use netlink_sys::{protocols::NETLINK_XFRM, Socket, SocketAddr};
use nix::errno::Errno;

use super::KernelError;

/// The request id of every SA and policy template netd makes ("nd" + 0x0e5b).
pub const REQID: u32 = 0x6e64_0e5b;
/// The packet mark (and mask) the policies of encrypted networks select on.
pub const MARK: u32 = 0x0004_0000;
/// ESP with AES-GCM, a 128-bit key, a 32-bit salt and a 16-byte ICV.
pub const AEAD_ALG: &str = "rfc4106(gcm(aes))";
pub const KEY_LEN: usize = 20;
const ICV_BITS: u32 = 128;
/// Anti-replay window of each inbound SA, in packets.
const REPLAY_WINDOW: u8 = 32;

const XFRM_MSG_NEWSA: u16 = 0x10;
const XFRM_MSG_DELSA: u16 = 0x11;
const XFRM_MSG_GETSA: u16 = 0x12;
const XFRM_MSG_DELPOLICY: u16 = 0x14;
const XFRM_MSG_GETPOLICY: u16 = 0x15;
const XFRM_MSG_UPDPOLICY: u16 = 0x19;
const XFRMA_TMPL: u16 = 5;
const XFRMA_ALG_AEAD: u16 = 18;
const XFRMA_MARK: u16 = 21;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const AF_INET: u16 = 2;
const IPPROTO_ESP: u8 = 50;
const IPPROTO_UDP: u8 = 17;
const XFRM_POLICY_OUT: u8 = 1;
const XFRM_INF: u64 = u64::MAX;

const SELECTOR_LEN: usize = 56;
const USERSA_INFO_LEN: usize = 224;
const USERSA_ID_LEN: usize = 24;
const USERPOLICY_INFO_LEN: usize = 168;
const USERPOLICY_ID_LEN: usize = 64;
const USER_TMPL_LEN: usize = 64;

/// One ESP SA in transport mode: packets from `src` to `dst` carry `spi`.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Sa {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub key: [u8; KEY_LEN],
}

impl std::fmt::Debug for Sa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never a key in a log line.
        write!(f, "Sa({} -> {} spi {:#010x})", self.src, self.dst, self.spi)
    }
}

/// An SA as the kernel lists it, with its counters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SaState {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub spi: u32,
    pub bytes: u64,
    pub packets: u64,
}

/// An outbound policy: UDP from `src` to `dst` port `dport` with `MARK` goes through
/// ESP from `src` to `dst` (an SA with `REQID`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Policy {
    pub src: Ipv4Addr,
    pub dst: Ipv4Addr,
    pub dport: u16,
}

/// A netlink socket for XFRM in the calling thread's network namespace.
pub struct Xfrm {
    sock: Socket,
    seq: u32,
    buf: Vec<u8>,
}

fn io_err(op: &str, e: std::io::Error) -> KernelError {
    KernelError::Netlink {
        op: op.to_string(),
        errno: e.raw_os_error().map(Errno::from_raw),
        msg: e.to_string(),
    }
}

fn put_u16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_ne_bytes());
}
fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_ne_bytes());
}
fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_ne_bytes());
}
fn get_u16(b: &[u8], at: usize) -> u16 {
    u16::from_ne_bytes([b[at], b[at + 1]])
}
fn get_u32(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}
fn get_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_ne_bytes(a)
}
fn get_v4(b: &[u8], at: usize) -> Ipv4Addr {
    Ipv4Addr::new(b[at], b[at + 1], b[at + 2], b[at + 3])
}
fn put_v4(b: &mut [u8], at: usize, a: Ipv4Addr) {
    b[at..at + 4].copy_from_slice(&a.octets());
}

/// Appends attribute `ty` with `data`, padded to 4 bytes.
fn attr(msg: &mut Vec<u8>, ty: u16, data: &[u8]) {
    let len = 4 + data.len();
    msg.extend_from_slice(&(len as u16).to_ne_bytes());
    msg.extend_from_slice(&ty.to_ne_bytes());
    msg.extend_from_slice(data);
    msg.resize(msg.len() + (len.next_multiple_of(4) - len), 0);
}

fn mark_attr(msg: &mut Vec<u8>) {
    let mut m = [0u8; 8];
    put_u32(&mut m, 0, MARK);
    put_u32(&mut m, 4, MARK);
    attr(msg, XFRMA_MARK, &m);
}

/// `struct xfrm_selector` for UDP from `src`/32 to `dst`/32 port `dport`.
fn selector(b: &mut [u8], p: &Policy) {
    put_v4(b, 0, p.dst);
    put_v4(b, 16, p.src);
    b[32..34].copy_from_slice(&p.dport.to_be_bytes());
    put_u16(b, 34, 0xffff);
    put_u16(b, 40, AF_INET);
    b[42] = 32; // prefixlen_d
    b[43] = 32; // prefixlen_s
    b[44] = IPPROTO_UDP;
}

/// `struct xfrm_lifetime_cfg` with no limits, at `at`: byte and packet limits
/// `XFRM_INF`, and 0 for the four times (0 is "never"; `XFRM_INF` there would overflow
/// the kernel's add-time arithmetic and expire the SA at once), as `ip xfrm` sets it.
fn no_limits(b: &mut [u8], at: usize) {
    for i in 0..4 {
        put_u64(b, at + 8 * i, XFRM_INF);
    }
}

impl Xfrm {
    pub fn open() -> Result<Xfrm, KernelError> {
        let mut sock = Socket::new(NETLINK_XFRM).map_err(|e| io_err("open xfrm socket", e))?;
        sock.bind_auto().map_err(|e| io_err("bind xfrm socket", e))?;
        sock.connect(&SocketAddr::new(0, 0))
            .map_err(|e| io_err("connect xfrm socket", e))?;
        Ok(Xfrm {
            sock,
            seq: 0,
            buf: Vec::with_capacity(64 * 1024),
        })
    }

    fn send(&mut self, op: &str, ty: u16, flags: u16, payload: &[u8]) -> Result<u32, KernelError> {
        self.seq = self.seq.wrapping_add(1);
        let mut msg = Vec::with_capacity(16 + payload.len());
        msg.extend_from_slice(&((16 + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&ty.to_ne_bytes());
        msg.extend_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        msg.extend_from_slice(&self.seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        self.sock.send(&msg, 0).map_err(|e| io_err(op, e))?;
        Ok(self.seq)
    }

    /// Sends one request and waits for its ACK; `Err` carries the kernel's errno.
    fn request(&mut self, op: &str, ty: u16, payload: &[u8]) -> Result<(), KernelError> {
        self.exchange(op, ty, NLM_F_ACK, payload, |_| {})
    }

    /// Sends a dump request and hands each message's payload to `each`.
    fn dump(&mut self, op: &str, ty: u16, each: impl FnMut(&[u8])) -> Result<(), KernelError> {
        self.exchange(op, ty, NLM_F_DUMP, &[], each)
    }

    /// Sends one message and reads its answers until the ACK, the error or the end of
    /// the dump, handing each data message's payload to `each`.
    fn exchange(
        &mut self,
        op: &str,
        ty: u16,
        flags: u16,
        payload: &[u8],
        mut each: impl FnMut(&[u8]),
    ) -> Result<(), KernelError> {
        let seq = self.send(op, ty, flags, payload)?;
        loop {
            self.buf.clear();
            self.sock.recv(&mut self.buf, 0).map_err(|e| io_err(op, e))?;
            let n = self.buf.len();
            let mut at = 0;
            while at + 16 <= n {
                let len = get_u32(&self.buf, at) as usize;
                let mty = get_u16(&self.buf, at + 4);
                let mseq = get_u32(&self.buf, at + 8);
                if len < 16 || at + len > n {
                    break;
                }
                if mseq == seq {
                    match mty {
                        NLMSG_DONE => return Ok(()),
                        NLMSG_ERROR if len >= 20 => {
                            let code = get_u32(&self.buf, at + 16) as i32;
                            if code == 0 {
                                return Ok(());
                            }
                            let errno = Errno::from_raw(-code);
                            return Err(KernelError::Netlink {
                                op: op.to_string(),
                                errno: Some(errno),
                                msg: errno.desc().to_string(),
                            });
                        }
                        _ => each(&self.buf[at + 16..at + len]),
                    }
                }
                at += len.next_multiple_of(4);
            }
        }
    }

    /// `ip xfrm state add src S dst D proto esp spi X reqid REQID mode transport
    /// replay-window 32 aead 'rfc4106(gcm(aes))' KEY 128`. `Ok(false)` when an SA with
    /// that destination and SPI exists already (made by an earlier run: its key is the
    /// same, since the SPI is derived from the key's epoch).
    pub fn add_sa(&mut self, sa: &Sa) -> Result<bool, KernelError> {
        let mut b = vec![0u8; USERSA_INFO_LEN];
        put_v4(&mut b, SELECTOR_LEN, sa.dst); // id.daddr
        b[SELECTOR_LEN + 16..SELECTOR_LEN + 20].copy_from_slice(&sa.spi.to_be_bytes());
        b[SELECTOR_LEN + 20] = IPPROTO_ESP;
        put_v4(&mut b, 80, sa.src);
        no_limits(&mut b, 96);
        put_u32(&mut b, 208, REQID);
        put_u16(&mut b, 212, AF_INET);
        b[214] = 0; // XFRM_MODE_TRANSPORT
        b[215] = REPLAY_WINDOW;
        let mut aead = vec![0u8; 72];
        aead[..AEAD_ALG.len()].copy_from_slice(AEAD_ALG.as_bytes());
        put_u32(&mut aead, 64, (KEY_LEN * 8) as u32);
        put_u32(&mut aead, 68, ICV_BITS);
        aead.extend_from_slice(&sa.key);
        attr(&mut b, XFRMA_ALG_AEAD, &aead);
        let op = format!(
            "xfrm state add src {} dst {} proto esp spi {:#010x}",
            sa.src, sa.dst, sa.spi
        );
        match self.request(&op, XFRM_MSG_NEWSA, &b) {
            Ok(()) => Ok(true),
            Err(KernelError::Netlink {
                errno: Some(Errno::EEXIST),
                ..
            }) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// `ip xfrm state delete dst D proto esp spi X`; one already gone is no error.
    pub fn del_sa(&mut self, dst: Ipv4Addr, spi: u32) -> Result<(), KernelError> {
        let mut b = vec![0u8; USERSA_ID_LEN];
        put_v4(&mut b, 0, dst);
        b[16..20].copy_from_slice(&spi.to_be_bytes());
        put_u16(&mut b, 20, AF_INET);
        b[22] = IPPROTO_ESP;
        let op = format!("xfrm state delete dst {dst} proto esp spi {spi:#010x}");
        match self.request(&op, XFRM_MSG_DELSA, &b) {
            Err(KernelError::Netlink {
                errno: Some(Errno::ESRCH | Errno::ENOENT),
                ..
            }) => Ok(()),
            r => r,
        }
    }

    /// netd's SAs (request id `REQID`, IPv4 ESP) with their counters.
    pub fn sas(&mut self) -> Result<Vec<SaState>, KernelError> {
        let mut out = Vec::new();
        self.dump("xfrm state list", XFRM_MSG_GETSA, |p| {
            if p.len() < USERSA_INFO_LEN
                || get_u32(p, 208) != REQID
                || get_u16(p, 212) != AF_INET
                || p[SELECTOR_LEN + 20] != IPPROTO_ESP
            {
                return;
            }
            out.push(SaState {
                dst: get_v4(p, SELECTOR_LEN),
                spi: u32::from_be_bytes([p[72], p[73], p[74], p[75]]),
                src: get_v4(p, 80),
                bytes: get_u64(p, 160),
                packets: get_u64(p, 168),
            });
        })?;
        Ok(out)
    }

    /// `ip xfrm policy update src S/32 dst D/32 proto udp dport P dir out mark MARK/MARK
    /// tmpl src S dst D proto esp reqid REQID mode transport` (made, or replaced as is).
    pub fn set_policy(&mut self, p: &Policy) -> Result<(), KernelError> {
        let mut b = vec![0u8; USERPOLICY_INFO_LEN];
        selector(&mut b, p);
        no_limits(&mut b, SELECTOR_LEN);
        b[160] = XFRM_POLICY_OUT;
        let mut t = vec![0u8; USER_TMPL_LEN];
        put_v4(&mut t, 0, p.dst); // id.daddr; id.spi 0: any SA
        t[20] = IPPROTO_ESP;
        put_u16(&mut t, 24, AF_INET);
        put_v4(&mut t, 28, p.src);
        put_u32(&mut t, 44, REQID);
        // mode 0 (transport), share 0, optional 0: the SA is required.
        put_u32(&mut t, 52, u32::MAX);
        put_u32(&mut t, 56, u32::MAX);
        put_u32(&mut t, 60, u32::MAX);
        attr(&mut b, XFRMA_TMPL, &t);
        mark_attr(&mut b);
        let op = format!(
            "xfrm policy update src {} dst {} proto udp dport {} dir out",
            p.src, p.dst, p.dport
        );
        self.request(&op, XFRM_MSG_UPDPOLICY, &b)
    }

    /// `ip xfrm policy delete … dir out mark MARK/MARK`; one already gone is no error.
    pub fn del_policy(&mut self, p: &Policy) -> Result<(), KernelError> {
        let mut b = vec![0u8; USERPOLICY_ID_LEN];
        selector(&mut b, p);
        b[SELECTOR_LEN + 4] = XFRM_POLICY_OUT;
        mark_attr(&mut b);
        let op = format!(
            "xfrm policy delete src {} dst {} proto udp dport {} dir out",
            p.src, p.dst, p.dport
        );
        match self.request(&op, XFRM_MSG_DELPOLICY, &b) {
            Err(KernelError::Netlink {
                errno: Some(Errno::ENOENT | Errno::ESRCH),
                ..
            }) => Ok(()),
            r => r,
        }
    }

    /// netd's policies: outbound, IPv4 UDP, with the mark `MARK`.
    pub fn policies(&mut self) -> Result<Vec<Policy>, KernelError> {
        let mut out = Vec::new();
        self.dump("xfrm policy list", XFRM_MSG_GETPOLICY, |p| {
            if p.len() < USERPOLICY_INFO_LEN
                || p[160] != XFRM_POLICY_OUT
                || get_u16(p, 40) != AF_INET
                || p[44] != IPPROTO_UDP
            {
                return;
            }
            if !has_mark(&p[USERPOLICY_INFO_LEN..]) {
                return;
            }
            out.push(Policy {
                dst: get_v4(p, 0),
                src: get_v4(p, 16),
                dport: u16::from_be_bytes([p[32], p[33]]),
            });
        })?;
        Ok(out)
    }
}

/// Whether the attributes `a` hold `XFRMA_MARK` with netd's mark and mask.
fn has_mark(mut a: &[u8]) -> bool {
    while a.len() >= 4 {
        let len = get_u16(a, 0) as usize;
        let ty = get_u16(a, 2) & 0x3fff;
        if len < 4 || len > a.len() {
            return false;
        }
        if ty == XFRMA_MARK && len >= 12 {
            return get_u32(a, 4) == MARK && get_u32(a, 8) == MARK;
        }
        a = &a[len.next_multiple_of(4).min(a.len())..];
    }
    false
}

/// Whether this kernel can make netd's ESP SAs: one is added between two loopback
/// addresses and deleted at once. `Err` says why not (no ESP, no AES-GCM).
pub fn probe_esp() -> Result<(), KernelError> {
    let mut x = Xfrm::open()?;
    let sa = Sa {
        src: Ipv4Addr::new(127, 0, 0, 2),
        dst: Ipv4Addr::new(127, 0, 0, 1),
        spi: 0x6e64_0001,
        key: [0x5a; KEY_LEN],
    };
    x.add_sa(&sa)?;
    x.del_sa(sa.dst, sa.spi)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_are_padded_and_the_mark_is_found() {
        let mut m = Vec::new();
        attr(&mut m, 99, &[1, 2, 3]);
        assert_eq!(m.len(), 8);
        assert_eq!(get_u16(&m, 0), 7);
        mark_attr(&mut m);
        assert!(has_mark(&m));
        assert!(!has_mark(&m[..8]));
    }

    #[test]
    fn a_policy_selector_says_udp_to_the_port() {
        let mut b = vec![0u8; SELECTOR_LEN];
        selector(
            &mut b,
            &Policy {
                src: "10.0.0.1".parse().unwrap(),
                dst: "10.0.0.2".parse().unwrap(),
                dport: 4789,
            },
        );
        assert_eq!(get_v4(&b, 0), Ipv4Addr::new(10, 0, 0, 2));
        assert_eq!(get_v4(&b, 16), Ipv4Addr::new(10, 0, 0, 1));
        assert_eq!(&b[32..34], &4789u16.to_be_bytes());
        assert_eq!(b[44], IPPROTO_UDP);
    }

    #[test]
    fn keys_stay_out_of_debug_output() {
        let sa = Sa {
            src: Ipv4Addr::LOCALHOST,
            dst: Ipv4Addr::LOCALHOST,
            spi: 0x1234,
            key: [0xab; KEY_LEN],
        };
        assert!(!format!("{sa:?}").contains("ab"));
    }
}
