//! The hot path: a plain A/AAAA question (one question, optionally an EDNS0 OPT, no
//! compression) for a name netd answers, read and written straight from and to bytes.
//! Everything else — and anything this code is unsure about — returns `None` and goes
//! through hickory-proto in `server::handle`. The property test in `server_tests`
//! checks that both paths give the same answer.

use std::net::IpAddr;

use rand::seq::SliceRandom;

use super::records::{Kind, Lookup, Rec, Table};
use super::server::{Transport, EDNS_PAYLOAD};

fn be16(b: &[u8], i: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*b.get(i)?, *b.get(i + 1)?]))
}

pub fn answer(table: &Table, sandbox: &str, ttl: u32, req: &[u8], t: Transport) -> Option<Vec<u8>> {
    // Header: a query (QR=0), opcode QUERY, no TC, one question, no answers/authority.
    if req.len() < 17 || req[2] & 0xfa != 0 || be16(req, 4)? != 1 || be16(req, 6)? != 0 || be16(req, 8)? != 0
    {
        return None;
    }
    let arcount = be16(req, 10)?;
    if arcount > 1 {
        return None;
    }
    let mut name = String::with_capacity(64);
    let mut i = 12;
    loop {
        let l = usize::from(*req.get(i)?);
        if l == 0 {
            i += 1;
            break;
        }
        if l > 63 || i + 1 + l > req.len() || name.len() + l > 250 {
            return None; // compression pointer or malformed: the slow path decides
        }
        if !name.is_empty() {
            name.push('.');
        }
        for &c in &req[i + 1..i + 1 + l] {
            if !(c.is_ascii_alphanumeric() || c == b'-' || c == b'_') {
                return None;
            }
            name.push(c.to_ascii_lowercase() as char);
        }
        i += 1 + l;
    }
    if name.is_empty() {
        return None;
    }
    let qtype = be16(req, i)?;
    if be16(req, i + 2)? != 1 {
        return None;
    }
    let qend = i + 4;
    let kind = match qtype {
        1 => Kind::A,
        28 => Kind::Aaaa,
        _ => return None,
    };
    let mut limit = 512usize;
    let edns = arcount == 1;
    if edns {
        // OPT: root name, type 41, class = payload size, ext-rcode/version/flags, rdata.
        if *req.get(qend)? != 0 || be16(req, qend + 1)? != 41 || *req.get(qend + 6)? != 0 {
            return None;
        }
        limit = usize::from(be16(req, qend + 3)?).clamp(512, 4096);
        let rdlen = usize::from(be16(req, qend + 9)?);
        if qend + 11 + rdlen != req.len() {
            return None;
        }
    } else if qend != req.len() {
        return None;
    }
    let mut shuffle = true;
    let (rcode, mut addrs) = match table.lookup(sandbox, &name, kind) {
        Lookup::NxDomain => (3u8, vec![]),
        found @ (Lookup::Found(_) | Lookup::InOrder(_)) => {
            // `InOrder`: a service's backends, already rotated by the table.
            shuffle = matches!(found, Lookup::Found(_));
            let recs = found.records().unwrap_or_default();
            let mut v = Vec::with_capacity(recs.len());
            for r in recs {
                match r {
                    Rec::Addr(ip) => v.push(ip),
                    _ => return None,
                }
            }
            (0u8, v)
        }
        _ => return None,
    };
    if shuffle {
        addrs.shuffle(&mut rand::rng());
    }
    let mut out = Vec::with_capacity(qend + addrs.len() * 28 + 11);
    out.extend_from_slice(&req[..2]);
    out.push(0x84 | (req[2] & 0x01)); // QR, AA, RD copied
    out.push(0x80 | (req[3] & 0x10) | rcode); // RA, CD copied
    out.extend_from_slice(&[0, 1]);
    out.extend_from_slice(&(addrs.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, u8::from(edns)]);
    out.extend_from_slice(&req[12..qend]);
    for ip in &addrs {
        out.extend_from_slice(&[0xc0, 0x0c]); // the question's name
        match ip {
            IpAddr::V4(v) => {
                out.extend_from_slice(&[0, 1, 0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&[0, 4]);
                out.extend_from_slice(&v.octets());
            }
            IpAddr::V6(v) => {
                out.extend_from_slice(&[0, 28, 0, 1]);
                out.extend_from_slice(&ttl.to_be_bytes());
                out.extend_from_slice(&[0, 16]);
                out.extend_from_slice(&v.octets());
            }
        }
    }
    if edns {
        out.extend_from_slice(&[0, 0, 41]);
        out.extend_from_slice(&EDNS_PAYLOAD.to_be_bytes());
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
    }
    if t == Transport::Udp && out.len() > limit {
        return None; // the slow path truncates
    }
    Some(out)
}
