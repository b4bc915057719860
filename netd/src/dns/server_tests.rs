use super::*;
use crate::dns::records::tests::sample;
use hickory_proto::op::{Metadata, Query};
use proptest::prelude::*;

fn query(name: &str, t: RecordType, edns: Option<u16>) -> Message {
    let mut m = Message::query();
    m.metadata.id = 0x1234;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    if let Some(p) = edns {
        let mut e = Edns::new();
        e.set_max_payload(p);
        m.edns = Some(e);
    }
    m
}

fn ask(sandbox: &str, m: &Message, t: Transport) -> Message {
    match handle(&sample(), sandbox, 600, &m.to_vec().unwrap(), t) {
        Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
        other => panic!("expected a reply, got {other:?}"),
    }
}

#[test]
fn answers_a_with_ttl_case_preserved_and_id_copied() {
    let r = ask("api", &query("WeB.", RecordType::A, None), Transport::Udp);
    assert_eq!(r.metadata.id, 0x1234);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.metadata.authoritative && r.metadata.recursion_desired);
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].ttl, 600);
    assert_eq!(r.answers[0].name.to_ascii(), "WeB.");
    assert_eq!(r.answers[0].data, RData::A(A("10.0.0.2".parse().unwrap())));
    assert_eq!(r.queries[0].name().to_ascii(), "WeB.");
}

#[test]
fn nxdomain_nodata_and_refused() {
    let r = ask("web", &query("db.", RecordType::A, None), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    let r = ask("web", &query("api.", RecordType::AAAA, None), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    let r = ask("web", &query("api.", RecordType::MX, None), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    let r = ask("nobody", &query("api.", RecordType::A, None), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    let mut q = query("api.", RecordType::A, None);
    q.queries[0].set_query_class(DNSClass::CH);
    assert_eq!(
        ask("web", &q, Transport::Udp).metadata.response_code,
        ResponseCode::Refused
    );
    let r = ask("web", &query("api.", RecordType::AXFR, None), Transport::Tcp);
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
}

#[test]
fn srv_ptr_and_forward() {
    let r = ask(
        "api",
        &query("_80._tcp.web.", RecordType::SRV, None),
        Transport::Udp,
    );
    assert_eq!(r.answers.len(), 1);
    assert!(matches!(&r.answers[0].data, RData::SRV(s) if s.port == 80));
    assert_eq!(r.additionals.len(), 2, "A and AAAA of the target");
    let r = ask(
        "api",
        &query("4.0.1.10.in-addr.arpa.", RecordType::PTR, None),
        Transport::Udp,
    );
    assert_eq!(
        r.answers[0].data,
        RData::PTR(PTR(Name::from_ascii("db.").unwrap()))
    );
    let m = query("example.com.", RecordType::A, None);
    match handle(&sample(), "api", 600, &m.to_vec().unwrap(), Transport::Udp) {
        Outcome::Forward(f) => {
            assert_eq!(f.name.to_ascii(), "example.com.");
            let up = forwarded_reply(&f, None, Transport::Udp).unwrap();
            let up = Message::from_vec(&up).unwrap();
            assert_eq!(up.metadata.response_code, ResponseCode::ServFail);
            assert_eq!(up.metadata.id, 0x1234);
        }
        other => panic!("expected forward, got {other:?}"),
    }
}

fn big_table() -> Table {
    let mut t = sample();
    for i in 0..100u8 {
        t.insert("front", "many", Rec::Addr(IpAddr::from([10, 0, 1, i])));
    }
    t
}

#[test]
fn round_robin_truncation_tcp_and_edns() {
    let t = big_table();
    let m = query("many.", RecordType::A, None);
    let b = m.to_vec().unwrap();
    let Outcome::Reply(udp) = handle(&t, "api", 600, &b, Transport::Udp) else {
        panic!()
    };
    let udp = Message::from_vec(&udp).unwrap();
    assert!(udp.metadata.truncation && udp.answers.is_empty());
    let Outcome::Reply(tcp) = handle(&t, "api", 600, &b, Transport::Tcp) else {
        panic!()
    };
    assert_eq!(Message::from_vec(&tcp).unwrap().answers.len(), 100);
    // With EDNS 4096 the 100 answers (~1.6 kB) fit over UDP, and our OPT comes back.
    let m = query("many.", RecordType::A, Some(4096));
    let Outcome::Reply(e) = handle(&t, "api", 600, &m.to_vec().unwrap(), Transport::Udp) else {
        panic!()
    };
    let e = Message::from_vec(&e).unwrap();
    assert!(!e.metadata.truncation);
    assert_eq!(e.answers.len(), 100);
    assert_eq!(e.edns.as_ref().map(|x| x.max_payload()), Some(EDNS_PAYLOAD));
    // Shuffled: 20 answers are not all in the same order.
    let firsts: std::collections::HashSet<String> = (0..20)
        .map(|_| {
            let Outcome::Reply(x) = handle(&t, "api", 600, &m.to_vec().unwrap(), Transport::Udp) else {
                panic!()
            };
            format!("{:?}", Message::from_vec(&x).unwrap().answers[0].data)
        })
        .collect();
    assert!(firsts.len() > 1);
}

#[test]
fn malformed_packets_get_formerr_or_drop() {
    let t = sample();
    // Too short for a header: dropped.
    assert!(matches!(
        handle(&t, "api", 600, &[1, 2, 3], Transport::Udp),
        Outcome::Drop
    ));
    // A response (QR set): dropped.
    let mut b = query("web.", RecordType::A, None).to_vec().unwrap();
    b[2] |= 0x80;
    assert!(matches!(
        handle(&t, "api", 600, &b, Transport::Udp),
        Outcome::Drop
    ));
    let formerr = |b: &[u8]| match handle(&t, "api", 600, b, Transport::Udp) {
        Outcome::Reply(r) => {
            assert_eq!(&r[..2], &b[..2], "id copied");
            assert_eq!(r[3] & 0x0f, 1, "FORMERR");
        }
        other => panic!("expected FORMERR, got {other:?}"),
    };
    // Header claims one question, nothing follows.
    formerr(&[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0]);
    // Compression loop: the name points at itself.
    formerr(&[0xab, 0xcd, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0xc0, 12, 0, 1, 0, 1]);
    // Huge counts.
    formerr(&[
        0xab, 0xcd, 1, 0, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0,
    ]);
    // Two questions.
    let mut m = query("web.", RecordType::A, None);
    m.add_query(Query::query(Name::from_ascii("api.").unwrap(), RecordType::A));
    let r = ask("api", &m, Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
    // Not a query opcode.
    let mut m = query("web.", RecordType::A, None);
    m.metadata.op_code = OpCode::Update;
    assert_eq!(
        ask("api", &m, Transport::Udp).metadata.response_code,
        ResponseCode::NotImp
    );
}

fn check_outcome(bytes: &[u8]) -> Result<(), TestCaseError> {
    let t = sample();
    for tr in [Transport::Udp, Transport::Tcp] {
        match handle(&t, "api", 600, bytes, tr) {
            Outcome::Reply(r) => {
                prop_assert!(r.len() >= 12);
                prop_assert_eq!(&r[..2], &bytes[..2]);
                prop_assert!(r[2] & 0x80 != 0, "replies are responses");
                if tr == Transport::Udp {
                    prop_assert!(r.len() <= MAX_UDP);
                }
            }
            Outcome::Drop => prop_assert!(bytes.len() < 12 || bytes[2] & 0x80 != 0),
            Outcome::Forward(f) => prop_assert_eq!(f.request.queries.len(), 1),
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Random bytes: never a panic; an answer, when there is one, is a response to the
    /// same id.
    #[test]
    fn fuzz_random_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..600)) {
        check_outcome(&bytes)?;
    }

    /// Valid queries with a few bytes flipped or cut: the same.
    #[test]
    fn fuzz_mutated_queries(
        name in prop::sample::select(vec!["web.", "_80._tcp.web.", "many.", "4.0.1.10.in-addr.arpa.", "x.y."]),
        qt in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::SRV, RecordType::PTR, RecordType::ANY]),
        edns in any::<bool>(),
        flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..6),
        cut in any::<usize>(),
    ) {
        let mut b = query(name, qt, edns.then_some(4096)).to_vec().unwrap();
        for (i, v) in flips {
            let i = i % b.len();
            b[i] ^= v;
        }
        let cut = 12 + cut % (b.len() - 11);
        b.truncate(cut);
        check_outcome(&b)?;
    }
}

fn canon(b: &[u8]) -> (Metadata, Vec<Query>, Vec<String>, Option<u16>, usize, usize) {
    let m = Message::from_vec(b).unwrap();
    let mut a: Vec<String> = m.answers.iter().map(|r| format!("{r}")).collect();
    a.sort();
    (
        m.metadata,
        m.queries.clone(),
        a,
        m.edns.as_ref().map(|e| e.max_payload()),
        m.authorities.len(),
        m.additionals.len(),
    )
}

proptest! {
    /// The byte-level fast path answers exactly like the hickory path whenever it answers.
    #[test]
    fn fast_path_agrees_with_hickory(
        name in prop::sample::select(vec!["web.", "WeB.", "www.", "api.", "db.", "nosuch.", "many.", "x.y.", "_80._tcp.web.", "a-b_c."]),
        qt in prop::sample::select(vec![RecordType::A, RecordType::AAAA, RecordType::MX]),
        edns in prop::option::of(512u16..5000),
        rd in any::<bool>(),
        cd in any::<bool>(),
        sandbox in prop::sample::select(vec!["api", "web", "db", "nobody"]),
    ) {
        let t = big_table();
        let mut q = query(name, qt, edns);
        q.metadata.recursion_desired = rd;
        q.metadata.checking_disabled = cd;
        let b = q.to_vec().unwrap();
        for tr in [Transport::Udp, Transport::Tcp] {
            if let Some(fast) = crate::dns::fast::answer(&t, sandbox, 600, &b, tr) {
                let Outcome::Reply(slow) = handle_parsed(&t, sandbox, 600, &b, tr) else {
                    return Err(TestCaseError::fail("slow path did not reply"));
                };
                prop_assert_eq!(canon(&fast), canon(&slow));
            }
        }
    }
}

#[test]
fn fast_path_takes_the_common_case() {
    let m = query("web.", RecordType::A, Some(1232));
    assert!(crate::dns::fast::answer(&sample(), "api", 600, &m.to_vec().unwrap(), Transport::Udp).is_some());
    let m = query("example.com.", RecordType::A, None);
    assert!(crate::dns::fast::answer(&sample(), "api", 600, &m.to_vec().unwrap(), Transport::Udp).is_none());
}

#[test]
fn unknown_edns_version_gets_badvers() {
    // RFC 6891 6.1.3: a request with an OPT version we do not speak gets BADVERS (16,
    // whose high bits travel in our OPT), and our OPT says version 0.
    let mut m = query("web.", RecordType::A, Some(1232));
    if let Some(e) = m.edns.as_mut() {
        e.set_version(1);
    }
    let r = ask("api", &m, Transport::Udp);
    // hickory reads 16 back as BADSIG (the two share the number); the wire value counts.
    assert_eq!(u16::from(r.metadata.response_code), 16);
    assert!(r.answers.is_empty());
    assert_eq!(r.edns.as_ref().map(|e| e.version()), Some(0));
    // Version 0 still answers.
    let r = ask("api", &query("web.", RecordType::A, Some(1232)), Transport::Udp);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert_eq!(r.answers.len(), 1);
}
