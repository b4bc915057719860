//! The encoder against what libnftables 1.0.6 sends for the same commands
//! (`nft_svc_ref.txt`), message by message, without a kernel.

use std::net::IpAddr;

use super::*;

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// The reference messages of one section: (NFT_MSG type, payload after nlmsghdr).
fn reference(section: &str) -> Vec<(u16, Vec<u8>)> {
    let text = include_str!("nft_svc_ref.txt");
    let mut on = false;
    let mut out = Vec::new();
    for l in text.lines().filter(|l| !l.starts_with('#')) {
        if l.starts_with('[') {
            on = l == format!("[{section}]");
            continue;
        }
        if on {
            let (t, hex) = l.split_once(' ').unwrap();
            let bytes = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            out.push((t.parse().unwrap(), bytes));
        }
    }
    out
}

/// The batch's command messages: (NFT_MSG type, flags, payload after nlmsghdr).
fn encoded(cmds: &[SvcCmd], set_id_base: u32) -> Vec<(u16, u16, Vec<u8>)> {
    let refs: Vec<&SvcCmd> = cmds.iter().collect();
    let mut seq = 0;
    let enc = encode_from(
        &refs,
        || {
            seq += 1;
            seq
        },
        set_id_base,
        true,
    )
    .unwrap();
    let mut out = Vec::new();
    let mut off = 0;
    while off < enc.bytes.len() {
        let b = &enc.bytes[off..];
        let len = u32::from_ne_bytes(b[0..4].try_into().unwrap()) as usize;
        let kind = u16::from_ne_bytes([b[4], b[5]]);
        let flags = u16::from_ne_bytes([b[6], b[7]]);
        if kind >> 8 == NFNL_SUBSYS_NFTABLES {
            out.push((kind & 0xff, flags, b[HDR..len].to_vec()));
        }
        off += len;
    }
    assert_eq!(enc.seqs.len(), out.len());
    out
}

/// Drops a top-level attribute from a payload (after the 4-byte nfgenmsg).
fn without(payload: &[u8], drop: u16) -> Vec<u8> {
    let mut out = payload[..4].to_vec();
    let mut off = 4;
    while off + 4 <= payload.len() {
        let len = u16::from_ne_bytes([payload[off], payload[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([payload[off + 2], payload[off + 3]]) & 0x3fff;
        let next = off + len.next_multiple_of(4);
        if kind != drop {
            out.extend_from_slice(&payload[off..next.min(payload.len())]);
        }
        off = next;
    }
    out
}

/// Netlink attributes as a tree: (type with flags, value or children).
enum Attr {
    Leaf(u16, Vec<u8>),
    Nest(u16, Vec<Attr>),
}

fn parse(b: &[u8]) -> Vec<Attr> {
    let mut out = Vec::new();
    let mut off = 0;
    while off + 4 <= b.len() {
        let len = u16::from_ne_bytes([b[off], b[off + 1]]) as usize;
        let kind = u16::from_ne_bytes([b[off + 2], b[off + 3]]);
        let v = &b[off + 4..off + len];
        out.push(if kind & NLA_F_NESTED != 0 {
            Attr::Nest(kind, parse(v))
        } else {
            Attr::Leaf(kind, v.to_vec())
        });
        off += len.next_multiple_of(4);
    }
    out
}

fn write(attrs: &[Attr], out: &mut Vec<u8>) {
    for a in attrs {
        let at = out.len();
        out.extend([0, 0, 0, 0]);
        let kind = match a {
            Attr::Leaf(k, v) => {
                out.extend(v);
                *k
            }
            Attr::Nest(k, c) => {
                write(c, out);
                *k
            }
        };
        let len = if let Attr::Leaf(_, v) = a {
            4 + v.len()
        } else {
            out.len() - at
        };
        out[at..at + 2].copy_from_slice(&(len as u16).to_ne_bytes());
        out[at + 2..at + 4].copy_from_slice(&kind.to_ne_bytes());
        out.resize(out.len().next_multiple_of(4), 0);
    }
}

/// A rule message without the set ids of lookups and dynsets of named sets: nft sends
/// its cache's id of an existing set beside the name; the kernel looks the name up.
fn without_named_set_ids(payload: &[u8]) -> Vec<u8> {
    let mut attrs = parse(&payload[4..]);
    for a in &mut attrs {
        let Attr::Nest(k, exprs) = a else { continue };
        if *k & 0x3fff != NFTA_RULE_EXPRESSIONS {
            continue;
        }
        for e in exprs {
            let Attr::Nest(_, parts) = e else { continue };
            let name = parts.iter().find_map(|p| match p {
                Attr::Leaf(NFTA_EXPR_NAME, v) => Some(v.clone()),
                _ => None,
            });
            let drop = match name.as_deref() {
                Some(b"lookup\0") => LOOKUP_SET_ID,
                Some(b"dynset\0") => 2,
                _ => continue,
            };
            for p in parts.iter_mut() {
                if let Attr::Nest(_, data) = p {
                    let anon = data
                        .iter()
                        .any(|d| matches!(d, Attr::Leaf(1, v) if v.starts_with(b"__map")));
                    if !anon {
                        data.retain(|d| !matches!(d, Attr::Leaf(k, _) if *k == drop));
                    }
                }
            }
        }
    }
    let mut out = payload[..4].to_vec();
    write(&attrs, &mut out);
    out
}

fn chain(name: &str, comment: &str) -> SvcCmd {
    SvcCmd::AddChain {
        name: name.into(),
        kind: ChainKind::Regular {
            comment: comment.into(),
        },
    }
}

fn set(v6: bool, comment: &str) -> AffinitySet {
    AffinitySet {
        v6,
        timeout_secs: 10,
        comment: comment.into(),
    }
}

fn rule(r: SvcRule, comment: Option<&str>) -> SvcCmd {
    SvcCmd::AddRule {
        chain: "c1".into(),
        rule: SvcRuleLine {
            rule: r,
            comment: comment.map(Into::into),
        },
    }
}

#[test]
fn chains_sets_and_maps_encode_as_nft_sends_them() {
    let cmds = vec![
        chain("c1", "hello"),
        SvcCmd::AddSet {
            name: "c1/aff10".into(),
            set: set(false, "clients of 10.0.0.1"),
        },
        SvcCmd::AddSet {
            name: "c1/aff6".into(),
            set: set(true, "clients of fd00::1"),
        },
        SvcCmd::AddMap(DispatchMap::Svc4Dispatch),
        SvcCmd::AddMap(DispatchMap::Svc6Dispatch),
        SvcCmd::AddMap(DispatchMap::Svc4Ingress),
        SvcCmd::AddMap(DispatchMap::Svc6Ingress),
    ];
    let refs = reference("pre");
    // nft's messages: table, c1, c2, then the sets and maps.
    let want: Vec<_> = [1, 3, 4, 5, 6, 7, 8].iter().map(|&i| &refs[i]).collect();
    let got = encoded(&cmds, 0);
    assert_eq!(got.len(), want.len());
    for (i, ((kind, flags, payload), (wkind, wpayload))) in got.iter().zip(want).enumerate() {
        assert_eq!(kind, wkind, "message {i}: {}", cmds[i]);
        assert_eq!(payload, wpayload, "message {i}: {}", cmds[i]);
        assert!(flags & NLM_F_CREATE != 0, "{}", cmds[i]);
        // Only the last message asks for an ack.
        assert_eq!(flags & NLM_F_ACK != 0, i == cmds.len() - 1, "{}", cmds[i]);
    }
}

#[test]
fn every_rule_shape_and_change_encodes_as_nft_sends_it() {
    let elem = MapElement {
        key: vec![Part::ip(ip("10.0.0.9")), Part::Proto(Proto::Tcp), Part::Port(80)],
        goto: "c1".into(),
    };
    let cmds = vec![
        rule(
            SvcRule::HairpinMark {
                backend: ip("10.0.0.1"),
            },
            Some("hairpin"),
        ),
        rule(
            SvcRule::HairpinMark {
                backend: ip("fd00::1"),
            },
            Some("hairpin"),
        ),
        rule(
            SvcRule::AffinityGoto {
                v6: false,
                set: "c1/aff10".into(),
                chain: "c2".into(),
            },
            Some("affinity"),
        ),
        rule(
            SvcRule::AffinityUpdate {
                v6: true,
                set: "c1/aff6".into(),
            },
            None,
        ),
        rule(
            SvcRule::Dnat {
                proto: Proto::Tcp,
                to: ip("10.0.0.1"),
                port: 8080,
            },
            None,
        ),
        rule(
            SvcRule::Dnat {
                proto: Proto::Udp,
                to: ip("fd00::1"),
                port: 53,
            },
            None,
        ),
        rule(
            SvcRule::Pick {
                chains: vec!["c1".into(), "c2".into()],
            },
            None,
        ),
        rule(SvcRule::RejectTcpReset, Some("no backend")),
        rule(SvcRule::RejectPortUnreachable, Some("no backend")),
        rule(SvcRule::Dispatch { v6: false }, Some("service VIPs")),
        rule(SvcRule::Dispatch { v6: true }, Some("service VIPs")),
        rule(
            SvcRule::IngressDispatch { v6: false },
            Some("service ingress ports"),
        ),
        rule(
            SvcRule::IngressDispatch { v6: true },
            Some("service ingress ports"),
        ),
        rule(SvcRule::HairpinMasquerade, Some("service hairpin")),
        SvcCmd::MapElements {
            add: true,
            map: DispatchMap::Svc4Dispatch,
            elems: vec![elem.clone()],
        },
        SvcCmd::MapElements {
            add: false,
            map: DispatchMap::Svc4Dispatch,
            elems: vec![elem],
        },
        SvcCmd::FlushChain("c1".into()),
        SvcCmd::DeleteChain("c2".into()),
        SvcCmd::FlushMap(DispatchMap::Svc4Dispatch),
        SvcCmd::DeleteSet("c1/aff6".into()),
    ];
    // The text is the one nft got.
    let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
    assert_eq!(
        text[6],
        "add rule inet netd c1 numgen random mod 2 vmap { 0 : goto c1, 1 : goto c2 }"
    );
    assert_eq!(
        text[12],
        "add rule inet netd c1 fib daddr type local ip6 daddr != ::1 meta l4proto . th dport vmap \
         @svc6_ingress comment \"service ingress ports\""
    );
    let want = reference("rules");
    // nft numbered the anonymous map 7 (its set ids run on across the session).
    let got = encoded(&cmds, 6);
    assert_eq!(got.len(), want.len());
    for (i, ((kind, _, payload), (wkind, wpayload))) in got.iter().zip(&want).enumerate() {
        assert_eq!(kind, wkind, "message {i}");
        // nft also names an existing map by its cache's id; the kernel takes the name.
        let (payload, wpayload) = if matches!(*kind, NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) && i != 7 {
            (
                without(payload, NFTA_SET_ELEM_LIST_SET_ID),
                without(wpayload, NFTA_SET_ELEM_LIST_SET_ID),
            )
        } else if *kind == NFT_MSG_NEWRULE {
            (without_named_set_ids(payload), without_named_set_ids(wpayload))
        } else {
            (payload.clone(), wpayload.clone())
        };
        assert_eq!(payload, wpayload, "message {i}");
    }
}

#[test]
fn what_the_kernel_cannot_hold_is_left_to_libnftables() {
    let long = "x".repeat(129);
    for cmd in [
        chain("c1", &long),
        chain(&"c".repeat(300), "ok"),
        rule(SvcRule::Pick { chains: vec![] }, None),
        SvcCmd::MapElements {
            add: true,
            map: DispatchMap::Svc6Dispatch,
            // An IPv4 address in the IPv6 map.
            elems: vec![MapElement {
                key: vec![Part::ip(ip("10.0.0.9")), Part::Proto(Proto::Tcp), Part::Port(80)],
                goto: "c1".into(),
            }],
        },
    ] {
        assert!(encode(&[&cmd], || 1).is_err(), "{cmd}");
    }
}

/// 10,000 VIPs in one element change: several messages, each nest under 64 KiB, every
/// element in one of them, only the last asking for an ack.
#[test]
fn a_long_element_list_is_split_under_the_attribute_limit() {
    let elems: Vec<MapElement> = (0..10_000u32)
        .map(|i| MapElement {
            key: vec![
                Part::ip(IpAddr::V4(std::net::Ipv4Addr::from(0x0a60_0000u32 + i))),
                Part::Proto(Proto::Tcp),
                Part::Port(80),
            ],
            goto: format!(
                "svc/bench/s{i:05}/bench/tcp/80/with-a-longer-chain-name-{}",
                "x".repeat(150)
            ),
        })
        .collect();
    let cmd = SvcCmd::MapElements {
        add: true,
        map: DispatchMap::Svc4Dispatch,
        elems,
    };
    let msgs = encoded(&[cmd], 0);
    assert!(msgs.len() >= 10_000 / ELEMS_PER_MSG, "{}", msgs.len());
    let mut total = 0;
    for (i, (kind, flags, payload)) in msgs.iter().enumerate() {
        assert_eq!(*kind, NFT_MSG_NEWSETELEM);
        assert_eq!(flags & NLM_F_ACK != 0, i == msgs.len() - 1);
        let attrs = parse(&payload[4..]);
        for a in &attrs {
            if let Attr::Nest(k, list) = a {
                assert_eq!(k & 0x3fff, NFTA_SET_ELEM_LIST_ELEMENTS);
                total += list.len();
            }
        }
        assert!(payload.len() < 65_536, "{}", payload.len());
    }
    assert_eq!(total, 10_000);
}

fn pick(v6: bool, ingress: bool, proto: Proto, n: u32) -> PickMap {
    PickMap {
        v6,
        ingress,
        proto,
        n,
    }
}

fn pe(vip: Option<&str>, port: u16, slot: u32, to: &str, to_port: u16) -> PickElement {
    PickElement {
        vip: vip.map(ip),
        port,
        slot,
        to: ip(to),
        to_port,
    }
}

/// The backend maps (`typeof` user data, built from its parts) and hairpin sets.
#[test]
fn backend_maps_and_hairpin_sets_encode_as_nft_sends_them() {
    let cmds = vec![
        SvcCmd::AddPickMap(pick(false, false, Proto::Tcp, 3)),
        SvcCmd::AddPickMap(pick(false, false, Proto::Udp, 1000)),
        SvcCmd::AddPickMap(pick(true, false, Proto::Tcp, 3)),
        SvcCmd::AddPickMap(pick(false, true, Proto::Tcp, 3)),
        SvcCmd::AddPickMap(pick(true, true, Proto::Udp, 3)),
        SvcCmd::AddHairpinSet { v6: false },
        SvcCmd::AddHairpinSet { v6: true },
    ];
    assert_eq!(
        cmds[1].to_string(),
        "add map inet netd svc/pick4/udp/n1000 { typeof ip daddr . udp dport . numgen random mod 1000 \
         : ip daddr . udp dport; }"
    );
    let want = reference("pickpre");
    let got = encoded(&cmds, 0);
    assert_eq!(got.len(), want.len());
    for (i, ((kind, _, payload), (wkind, wpayload))) in got.iter().zip(&want).enumerate() {
        assert_eq!(kind, wkind, "message {i}: {}", cmds[i]);
        assert_eq!(payload, wpayload, "message {i}: {}", cmds[i]);
    }
}

/// The rules and element changes of the pick layout, on top of those maps.
#[test]
fn pick_rules_and_elements_encode_as_nft_sends_them() {
    let elems = |add, map, elems| SvcCmd::PickElements { add, map, elems };
    let hp = |add, v6, b: &[&str]| SvcCmd::HairpinElements {
        add,
        v6,
        backends: b.iter().map(|s| ip(s)).collect(),
    };
    let p4 = pick(false, false, Proto::Tcp, 3);
    let cmds = vec![
        chain("c1", "hello"),
        rule(SvcRule::PickDnat { map: p4 }, None),
        rule(
            SvcRule::PickDnat {
                map: pick(false, false, Proto::Udp, 1000),
            },
            None,
        ),
        rule(
            SvcRule::PickDnat {
                map: pick(true, false, Proto::Tcp, 3),
            },
            None,
        ),
        rule(
            SvcRule::PickDnat {
                map: pick(false, true, Proto::Tcp, 3),
            },
            None,
        ),
        rule(
            SvcRule::PickDnat {
                map: pick(true, true, Proto::Udp, 3),
            },
            None,
        ),
        rule(SvcRule::Goto { chain: "c1".into() }, None),
        rule(
            SvcRule::HairpinSetMasquerade { v6: false },
            Some("service hairpin"),
        ),
        rule(
            SvcRule::HairpinSetMasquerade { v6: true },
            Some("service hairpin"),
        ),
        elems(
            true,
            p4,
            vec![
                pe(Some("10.0.0.9"), 80, 0, "10.0.0.1", 8080),
                pe(Some("10.0.0.9"), 80, 2, "10.0.0.3", 8080),
            ],
        ),
        elems(
            true,
            pick(true, false, Proto::Tcp, 3),
            vec![pe(Some("fd00::9"), 53, 1, "fd00::1", 5353)],
        ),
        elems(
            true,
            pick(false, true, Proto::Tcp, 3),
            vec![pe(None, 8088, 0, "10.0.0.1", 8080)],
        ),
        elems(
            true,
            pick(true, true, Proto::Udp, 3),
            vec![pe(None, 8088, 2, "fd00::1", 8080)],
        ),
        elems(false, p4, vec![pe(Some("10.0.0.9"), 80, 0, "10.0.0.1", 8080)]),
        hp(true, false, &["10.0.0.1", "10.0.0.3"]),
        hp(true, true, &["fd00::1"]),
        hp(false, false, &["10.0.0.1"]),
        SvcCmd::FlushSet {
            name: p4.name(),
            map: true,
        },
    ];
    // The text is the one nft got (nft_svc_ref.txt's header names the file).
    let text: Vec<String> = cmds.iter().map(ToString::to_string).collect();
    assert_eq!(
        text[5],
        "add rule inet netd c1 dnat ip6 to udp dport . numgen random mod 3 map @svc/ingress6/udp/n3"
    );
    assert_eq!(
        text[9],
        "add element inet netd svc/pick4/tcp/n3 { 10.0.0.9 . 80 . 0 : 10.0.0.1 . 8080, 10.0.0.9 . 80 . 2 : 10.0.0.3 . 8080 }"
    );
    assert_eq!(
        text[14],
        "add element inet netd svc/hairpin4 { 10.0.0.1 . 10.0.0.1, 10.0.0.3 . 10.0.0.3 }"
    );
    let want = reference("pickrules");
    let got = encoded(&cmds, 7);
    assert_eq!(got.len(), want.len());
    for (i, ((kind, _, payload), (wkind, wpayload))) in got.iter().zip(&want).enumerate() {
        assert_eq!(kind, wkind, "message {i}");
        // nft also names an existing set by its cache's id; the kernel takes the name.
        let (payload, wpayload) = if matches!(*kind, NFT_MSG_NEWSETELEM | NFT_MSG_DELSETELEM) {
            (
                without(payload, NFTA_SET_ELEM_LIST_SET_ID),
                without(wpayload, NFTA_SET_ELEM_LIST_SET_ID),
            )
        } else if *kind == NFT_MSG_NEWRULE {
            (without_named_set_ids(payload), without_named_set_ids(wpayload))
        } else {
            (payload.clone(), wpayload.clone())
        };
        assert_eq!(payload, wpayload, "message {i}: {}", text[i]);
    }
}
