//! What an overlay network puts on the wire (issue 18): `tcpdump` captures on the
//! underlay bridge while sandboxes on three hosts ping each other, re-resolve each
//! other after a neighbour flush, ask for an address nobody holds, and send a packet of
//! the full overlay MTU. The capture is parsed here (pcap, outer Ethernet/IPv4/UDP,
//! VXLAN, inner Ethernet) and must show: overlay traffic in VXLAN between the hosts' own
//! addresses; no inner frame to a broadcast or multicast MAC (an overlay ARP request
//! would be one: the VXLAN device answers ARP from its neighbour table, `proxy`); no
//! VXLAN to a broadcast or multicast destination; no overlay address in underlay ARP;
//! no IP fragment (the inner MTU is the underlay's − 50, so 1500-byte outer packets
//! pass whole); and no all-zeros (flood) FDB entry on any VXLAN device.

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use integration::cluster::{eventually, Cluster};
use integration::harness::{nsenter, ping_from};
use integration::skip::{no_program, no_root};

/// One captured frame, as far as the checks need it.
#[derive(Debug, Default)]
struct Frame {
    dst_mac: [u8; 6],
    /// ARP: (sender IP, target IP).
    arp: Option<(Ipv4Addr, Ipv4Addr)>,
    /// IPv4: (src, dst, total length, fragment: MF set or offset non-zero).
    ip: Option<(Ipv4Addr, Ipv4Addr, u16, bool)>,
    /// VXLAN (UDP to 4789): (VNI, inner destination MAC, inner ethertype, inner ICMP
    /// echo request).
    vxlan: Option<(u32, [u8; 6], u16, bool)>,
}

fn is_group(mac: &[u8; 6]) -> bool {
    mac[0] & 1 == 1
}

fn ipv4(b: &[u8]) -> Ipv4Addr {
    Ipv4Addr::new(b[0], b[1], b[2], b[3])
}

/// Parses an Ethernet frame (truncated to the snap length).
fn parse_frame(f: &[u8]) -> Option<Frame> {
    let mut out = Frame {
        dst_mac: f.get(0..6)?.try_into().ok()?,
        ..Default::default()
    };
    let ethertype = u16::from_be_bytes([*f.get(12)?, *f.get(13)?]);
    let l3 = &f[14..];
    match ethertype {
        0x0806 => out.arp = Some((ipv4(l3.get(14..18)?), ipv4(l3.get(24..28)?))),
        0x0800 => {
            let ihl = usize::from(l3.first()? & 0x0f) * 4;
            let len = u16::from_be_bytes([*l3.get(2)?, *l3.get(3)?]);
            let frag = u16::from_be_bytes([*l3.get(6)?, *l3.get(7)?]);
            let fragment = frag & 0x2000 != 0 || frag & 0x1fff != 0;
            out.ip = Some((ipv4(l3.get(12..16)?), ipv4(l3.get(16..20)?), len, fragment));
            let udp = l3.get(ihl..)?;
            if *l3.get(9)? == 17 && u16::from_be_bytes([*udp.get(2)?, *udp.get(3)?]) == 4789 {
                let vx = udp.get(8..16)?;
                let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
                let inner = udp.get(16..)?;
                let inner_type = u16::from_be_bytes([*inner.get(12)?, *inner.get(13)?]);
                let echo = inner_type == 0x0800
                    && inner.get(14 + 9) == Some(&1)
                    && inner.get(14 + usize::from(inner.get(14)? & 0x0f) * 4) == Some(&8);
                out.vxlan = Some((vni, inner.get(0..6)?.try_into().ok()?, inner_type, echo));
            }
        }
        _ => {}
    }
    Some(out)
}

/// The frames of a pcap file (tcpdump -w, link type Ethernet, either byte order).
fn read_pcap(path: &Path) -> Vec<Frame> {
    let b = std::fs::read(path).expect("read capture");
    assert!(b.len() >= 24, "capture too short: {} bytes", b.len());
    let le = match b[0..4] {
        [0xd4, 0xc3, 0xb2, 0xa1] | [0x4d, 0x3c, 0xb2, 0xa1] => true,
        [0xa1, 0xb2, 0xc3, 0xd4] | [0xa1, 0xb2, 0x3c, 0x4d] => false,
        _ => panic!("not a pcap file: {:02x?}", &b[0..4]),
    };
    let u32_at = |i: usize| {
        let w = [b[i], b[i + 1], b[i + 2], b[i + 3]];
        if le {
            u32::from_le_bytes(w)
        } else {
            u32::from_be_bytes(w)
        }
    };
    assert_eq!(u32_at(20), 1, "link type is not Ethernet");
    let mut frames = Vec::new();
    let mut i = 24;
    while i + 16 <= b.len() {
        let caplen = u32_at(i + 8) as usize;
        let data = &b[i + 16..(i + 16 + caplen).min(b.len())];
        if let Some(f) = parse_frame(data) {
            frames.push(f);
        }
        i += 16 + caplen;
    }
    frames
}

/// `tcpdump -i br0 -w FILE` in the underlay namespace; stopped (SIGINT, by PID) on drop.
struct Capture {
    child: std::process::Child,
}

impl Capture {
    fn start(underlay_ns: &str, file: &Path, log: &Path) -> Capture {
        let child = Command::new("nsenter")
            .arg(format!("--net=/run/netns/{underlay_ns}"))
            .args(["tcpdump", "-i", "br0", "-nn", "-U", "-s", "256", "-w"])
            .arg(file)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(log).expect("tcpdump log"))
            .spawn()
            .expect("start tcpdump");
        let c = Capture { child };
        let t0 = Instant::now();
        while !std::fs::read_to_string(log)
            .unwrap_or_default()
            .contains("listening on")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "tcpdump did not start: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        c
    }

    fn stop(&mut self) {
        // SIGINT: tcpdump flushes and closes the file (-U already writes each packet).
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGINT);
        let t0 = Instant::now();
        while t0.elapsed() < Duration::from_secs(5) {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        self.stop();
    }
}

#[test]
fn overlay_traffic_on_the_underlay_is_unicast_vxlan_with_no_flood() {
    if no_root()
        || no_program("etcd", "etcd-server")
        || no_program("etcdctl", "etcd-client")
        || no_program("tcpdump", "tcpdump")
    {
        return;
    }
    let c = Cluster::new(3);
    let dir = std::env::temp_dir().join(format!("netd-underlay-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("capture dir");
    let pcap = dir.join("br0.pcap");
    // Capturing before the network exists: the first ARP of every sandbox is on it.
    let mut cap = Capture::start(&c.underlay.name, &pcap, &dir.join("tcpdump.log"));

    let hosts = [c.node(0), c.node(1), c.node(2)];
    hosts[0].ctl(&[
        "network",
        "create",
        "-d",
        "overlay",
        "--subnet",
        "10.62.0.0/24",
        "ov",
    ]);
    for h in hosts {
        assert!(
            eventually(10, || h.ctl(&["network", "ls", "-q"]).lines().any(|l| l == "ov")),
            "ov missing: {}",
            h.log()
        );
    }
    for (i, h) in hosts.iter().enumerate() {
        h.ctl(&["sandbox", "create", "--network", "ov", &format!("s{}", i + 1)]);
    }
    let ips: Vec<String> = hosts
        .iter()
        .enumerate()
        .map(|(i, h)| h.ip(&format!("s{}", i + 1), "ov"))
        .collect();
    let pairs = |round: &str| {
        for (i, h) in hosts.iter().enumerate() {
            for (j, ip) in ips.iter().enumerate().filter(|(j, _)| *j != i) {
                assert!(
                    eventually(10, || ping_from(&h.sb(&format!("s{}", i + 1)), None, ip)),
                    "{round}: s{} cannot ping s{} at {ip}",
                    i + 1,
                    j + 1
                );
            }
        }
    };
    pairs("first");
    // Every sandbox asks again (ARP) for addresses it knew, and for one nobody holds:
    // the question that a flood entry would carry to every host.
    for (i, h) in hosts.iter().enumerate() {
        let sb = h.sb(&format!("s{}", i + 1));
        assert!(nsenter(&sb, &["ip", "neigh", "flush", "all"]).ok());
        assert!(!ping_from(&sb, None, "10.62.0.250"), "10.62.0.250 answered");
    }
    pairs("after a neighbour flush");
    // A packet of the overlay's full MTU (1450 = 1422 + 28) crosses as one 1500-byte
    // VXLAN packet; one byte more is refused in the sandbox, not fragmented outside.
    let s1 = hosts[0].sb("s1");
    assert!(nsenter(&s1, &["ping", "-c1", "-W1", "-M", "do", "-s", "1422", &ips[1]]).ok());
    assert!(!nsenter(&s1, &["ping", "-c1", "-W1", "-M", "do", "-s", "1423", &ips[1]]).ok());
    cap.stop();

    let frames = read_pcap(&pcap);
    let vteps: Vec<Ipv4Addr> = c.nodes.iter().map(|n| n.addr.parse().unwrap()).collect();
    let overlay = |a: &Ipv4Addr| a.octets()[..3] == [10, 62, 0];
    let vxlan: Vec<&Frame> = frames.iter().filter(|f| f.vxlan.is_some()).collect();
    // The capture saw the overlay: echo requests inside VXLAN, on one VNI.
    let echoes = vxlan.iter().filter(|f| f.vxlan.unwrap().3).count();
    assert!(
        echoes >= 12,
        "{echoes} inner echo requests in {} frames",
        frames.len()
    );
    let vnis: std::collections::BTreeSet<u32> = vxlan.iter().map(|f| f.vxlan.unwrap().0).collect();
    assert_eq!(vnis.len(), 1, "VNIs {vnis:?}");
    for f in &vxlan {
        let (src, dst, _, _) = f.ip.unwrap();
        let (_, inner_dst, inner_type, _) = f.vxlan.unwrap();
        assert!(
            vteps.contains(&src) && vteps.contains(&dst) && src != dst,
            "VXLAN {src} -> {dst} is not host to host"
        );
        assert!(
            !is_group(&f.dst_mac),
            "VXLAN to {:02x?} (outer broadcast/multicast)",
            f.dst_mac
        );
        assert!(
            !is_group(&inner_dst),
            "inner frame to {inner_dst:02x?} (ethertype {inner_type:#06x}) crossed the underlay"
        );
        assert_ne!(
            inner_type, 0x0806,
            "an overlay ARP crossed the underlay inside VXLAN"
        );
    }
    for f in &frames {
        if let Some((sender, target)) = f.arp {
            assert!(
                !overlay(&sender) && !overlay(&target),
                "overlay address in underlay ARP: {sender} asks for {target}"
            );
        }
        if let Some((src, dst, len, fragment)) = f.ip {
            assert!(
                !fragment,
                "IP fragment on the underlay: {src} -> {dst}, {len} bytes"
            );
            assert!(
                len <= 1500,
                "{len}-byte IPv4 packet {src} -> {dst} on a 1500 underlay"
            );
        }
    }
    let full = vxlan.iter().filter(|f| f.ip.unwrap().2 == 1500).count();
    assert!(
        full >= 1,
        "the 1450-byte overlay packet did not cross as one 1500-byte VXLAN packet"
    );
    for (i, h) in hosts.iter().enumerate() {
        let f = h.sh("bridge fdb show dev ndvx-ov").stdout;
        assert!(!f.is_empty(), "h{}: no FDB on ndvx-ov", i + 1);
        assert!(!f.contains("00:00:00:00:00:00"), "flood entry on h{}: {f}", i + 1);
    }
    println!(
        "underlay: {} frames, {} VXLAN ({echoes} inner echo requests), none to a group address",
        frames.len(),
        vxlan.len()
    );
    let _ = std::fs::remove_dir_all(&dir);
}
