//! The DNS handler: one request's bytes in, an outcome out (reply bytes, drop, or
//! "forward this upstream"). Pure, so it is unit-tested and fuzzed without sockets.
//!
//! Wire format is hickory-proto's (`Message::from_vec`/`to_vec`), which rejects
//! compression loops, pointers past the end and counts larger than the packet. We do not
//! use hickory-server's `ServerFuture`: its request handler sees only the peer address,
//! and a sandbox's identity here is the socket the query arrived on (each sandbox has
//! its own 127.0.0.11 in its own namespace, and 127.0.0.1 looks the same from all of
//! them), so the listener loops (`listener.rs`) are ours and call `handle` directly.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME, PTR, SRV};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use rand::seq::SliceRandom;

use super::records::{Kind, Lookup, Rec, Table};

/// What we advertise in our OPT record (the common "no fragmentation" size).
pub const EDNS_PAYLOAD: u16 = 1232;
/// Largest UDP answer we ever send, whatever the client advertises.
const MAX_UDP: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
}

/// A query netd does not own, to send upstream; `prefix` holds CNAME records already
/// answered locally (an ExternalName pointing outside).
#[derive(Debug, Clone)]
pub struct Forward {
    pub request: Message,
    pub name: Name,
    pub qtype: RecordType,
    pub prefix: Vec<Record>,
}

#[derive(Debug)]
pub enum Outcome {
    Reply(Vec<u8>),
    /// Not answerable (too short to carry an id, or not a query at all).
    Drop,
    Forward(Box<Forward>),
}

fn kind_of(t: RecordType) -> Kind {
    match t {
        RecordType::A => Kind::A,
        RecordType::AAAA => Kind::Aaaa,
        RecordType::SRV => Kind::Srv,
        RecordType::CNAME => Kind::Cname,
        RecordType::PTR => Kind::Ptr,
        RecordType::ANY => Kind::Any,
        _ => Kind::Other,
    }
}

/// A header-only error answer built from the raw bytes, for requests hickory cannot
/// parse: same id, QR set, opcode and RD copied, no sections.
fn raw_error(req: &[u8], rcode: ResponseCode) -> Vec<u8> {
    let mut out = vec![0u8; 12];
    out[0] = req[0];
    out[1] = req[1];
    out[2] = 0x80 | (req[2] & 0x79); // QR, opcode, RD
    out[3] = 0x80 | (u16::from(rcode) as u8 & 0x0f); // RA
    out
}

/// The response skeleton for a parsed request.
pub fn response_to(req: &Message, rcode: ResponseCode) -> Message {
    let mut m = Message::response(req.metadata.id, req.metadata.op_code);
    m.metadata.recursion_desired = req.metadata.recursion_desired;
    m.metadata.checking_disabled = req.metadata.checking_disabled;
    m.metadata.recursion_available = true;
    m.metadata.response_code = rcode;
    m.queries = req.queries.clone();
    if req.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        m.edns = Some(e);
    }
    m
}

/// How large a UDP answer this client accepts.
fn udp_limit(req: &Message) -> usize {
    req.edns
        .as_ref()
        .map_or(512, |e| usize::from(e.max_payload()).clamp(512, MAX_UDP))
}

/// Encodes `resp`; over UDP, an answer larger than the client accepts becomes an empty
/// one with TC set, so the client retries over TCP.
pub fn encode(req: &Message, resp: &Message, t: Transport) -> Option<Vec<u8>> {
    let bytes = resp.to_vec().ok()?;
    if t == Transport::Udp && bytes.len() > udp_limit(req) {
        return resp.truncate().to_vec().ok();
    }
    Some(bytes)
}

fn fqdn(name: &str) -> Option<Name> {
    Name::from_ascii(format!("{name}.")).ok()
}

fn addr_record(owner: &Name, ttl: u32, ip: IpAddr) -> Record {
    let data = match ip {
        IpAddr::V4(v) => RData::A(A(v)),
        IpAddr::V6(v) => RData::AAAA(AAAA(v)),
    };
    Record::from_rdata(owner.clone(), ttl, data)
}

/// Answers one request for `sandbox` from `table`: plain A/AAAA questions for netd's
/// names straight from bytes (`fast`), everything else through hickory-proto.
pub fn handle(table: &Table, sandbox: &str, ttl: u32, bytes: &[u8], t: Transport) -> Outcome {
    if let Some(b) = super::fast::answer(table, sandbox, ttl, bytes, t) {
        return Outcome::Reply(b);
    }
    handle_parsed(table, sandbox, ttl, bytes, t)
}

/// `handle` without the fast path.
pub fn handle_parsed(table: &Table, sandbox: &str, ttl: u32, bytes: &[u8], t: Transport) -> Outcome {
    if bytes.len() < 12 || bytes[2] & 0x80 != 0 {
        // No room for an id, or a response (answering those invites loops).
        return Outcome::Drop;
    }
    let req = match Message::from_vec(bytes) {
        Ok(m) => m,
        Err(_) => return Outcome::Reply(raw_error(bytes, ResponseCode::FormErr)),
    };
    let reply = |m: Message| match encode(&req, &m, t) {
        Some(b) => Outcome::Reply(b),
        None => Outcome::Reply(raw_error(bytes, ResponseCode::ServFail)),
    };
    if req.metadata.op_code != OpCode::Query {
        return reply(response_to(&req, ResponseCode::NotImp));
    }
    if req.edns.as_ref().is_some_and(|e| e.version() > 0) {
        // RFC 6891 6.1.3: we speak EDNS version 0 only; our OPT says so.
        return reply(response_to(&req, ResponseCode::BADVERS));
    }
    if req.queries.len() != 1 || req.metadata.message_type != MessageType::Query {
        return reply(response_to(&req, ResponseCode::FormErr));
    }
    let q = &req.queries[0];
    if q.query_class() != DNSClass::IN {
        return reply(response_to(&req, ResponseCode::Refused));
    }
    let qname = q.name().clone();
    let qtype = q.query_type();
    if matches!(qtype, RecordType::AXFR | RecordType::IXFR | RecordType::OPT) {
        return reply(response_to(&req, ResponseCode::Refused));
    }
    let name = qname.to_ascii();
    let mut resp = response_to(&req, ResponseCode::NoError);
    match table.lookup(sandbox, &name, kind_of(qtype)) {
        Lookup::Refused => return reply(response_to(&req, ResponseCode::Refused)),
        Lookup::NxDomain => {
            resp.metadata.authoritative = true;
            resp.metadata.response_code = ResponseCode::NXDomain;
        }
        Lookup::NotOurs => {
            return Outcome::Forward(Box::new(Forward {
                request: req.clone(),
                name: qname,
                qtype,
                prefix: vec![],
            }))
        }
        Lookup::Ptr(names) => {
            resp.metadata.authoritative = true;
            for n in names.iter().filter_map(|n| fqdn(n)) {
                resp.answers
                    .push(Record::from_rdata(qname.clone(), ttl, RData::PTR(PTR(n))));
            }
        }
        found @ (Lookup::Found(_) | Lookup::InOrder(_)) => {
            // Round robin for a service's backends (the table rotates them), a fresh
            // random order per answer for other names, as Docker does.
            let shuffle = matches!(found, Lookup::Found(_));
            let recs = found.records().unwrap_or_default();
            resp.metadata.authoritative = true;
            let mut addrs: Vec<IpAddr> = Vec::new();
            for r in recs {
                match r {
                    Rec::Addr(ip) => addrs.push(ip),
                    Rec::Srv { port, target } => {
                        let Some(tn) = fqdn(&target) else { continue };
                        resp.answers.push(Record::from_rdata(
                            qname.clone(),
                            ttl,
                            RData::SRV(SRV::new(0, 0, port, tn.clone())),
                        ));
                        if let Some(v) = table.lookup(sandbox, &target, Kind::Any).records() {
                            for r in v {
                                if let Rec::Addr(ip) = r {
                                    resp.additionals.push(addr_record(&tn, ttl, ip));
                                }
                            }
                        }
                    }
                    Rec::Cname(target) => {
                        let Some(tn) = fqdn(&target) else { continue };
                        let cname = Record::from_rdata(qname.clone(), ttl, RData::CNAME(CNAME(tn.clone())));
                        if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
                            resp.answers.push(cname);
                            continue;
                        }
                        match table.lookup(sandbox, &target, kind_of(qtype)) {
                            Lookup::NotOurs => {
                                return Outcome::Forward(Box::new(Forward {
                                    request: req.clone(),
                                    name: tn,
                                    qtype,
                                    prefix: vec![cname],
                                }))
                            }
                            l @ (Lookup::Found(_) | Lookup::InOrder(_)) => {
                                let v = l.records().unwrap_or_default();
                                resp.answers.push(cname);
                                for r in v {
                                    if let Rec::Addr(ip) = r {
                                        resp.answers.push(addr_record(&tn, ttl, ip));
                                    }
                                }
                            }
                            _ => resp.answers.push(cname),
                        }
                    }
                }
            }
            if shuffle {
                addrs.shuffle(&mut rand::rng());
            }
            for ip in addrs {
                resp.answers.push(addr_record(&qname, ttl, ip));
            }
        }
    }
    reply(resp)
}

/// The reply to send for a forwarded query, from the upstream's answer (or SERVFAIL
/// when there is none): the client's id and question, our CNAME prefix, the upstream's
/// records.
pub fn forwarded_reply(fwd: &Forward, upstream: Option<&Message>, t: Transport) -> Option<Vec<u8>> {
    let req = &fwd.request;
    let Some(up) = upstream else {
        return encode(req, &response_to(req, ResponseCode::ServFail), t);
    };
    let mut m = response_to(req, up.metadata.response_code);
    m.metadata.authoritative = false;
    m.metadata.authentic_data = false;
    m.answers = fwd.prefix.clone();
    m.answers.extend(up.answers.iter().cloned());
    m.authorities = up.authorities.clone();
    m.additionals = up.additionals.clone();
    if up.metadata.truncation && t == Transport::Udp {
        m.metadata.truncation = true;
    }
    encode(req, &m, t)
}

#[cfg(test)]
#[path = "server_tests.rs"]
mod tests;
