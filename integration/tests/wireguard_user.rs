//! The userspace WireGuard device (`kernel::wg_user`, run as `netd wireguard`) between
//! two namespaces joined by a veth underlay: ping and a TCP exchange go through the
//! tunnel; the underlay carries nothing but UDP to and from the listen port (no ICMP or
//! TCP in the clear); a peer known under the wrong public key gets nothing through;
//! SIGTERM removes the link; bad arguments create nothing; and, in-process, the API the
//! daemon will use (`set_peers` keeps a session whose key stays).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use integration::harness::{bin, nsenter, ping_from};
use integration::ns::{path_of, NsGuard};
use integration::skip::{no_program, no_root};
use netd::kernel::probe;
use netd::kernel::wg_user::{generate_private_key, key_to_base64, public_key_of, UserWg, WgConfig, WgPeer};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const PORT: u16 = 51820;
static NEXT: AtomicUsize = AtomicUsize::new(0);

/// Two namespaces `wgh-<pid>-<n>-{a,b}` on a veth (192.168.77.1 and .2/24) and a
/// directory for key files; removed on drop, after the devices started in them.
struct Pair {
    ns: [PathBuf; 2],
    dir: PathBuf,
    keys: [[u8; 32]; 2],
    devices: Vec<Child>,
    _guard: NsGuard,
}

impl Pair {
    fn new() -> Pair {
        let tag = format!(
            "wgh-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let mut guard = NsGuard::new();
        let names = [format!("{tag}-a"), format!("{tag}-b")];
        for n in &names {
            guard.track(&path_of(n));
            assert!(sh(&format!("ip netns add {n}")), "ip netns add {n}");
        }
        let [a, b] = &names;
        for cmd in [
            // No IPv6 on the underlay: its own MLD and ND would muddle the capture.
            format!("ip netns exec {a} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"),
            format!("ip netns exec {b} sysctl -qw net.ipv6.conf.all.disable_ipv6=1"),
            format!("ip netns exec {a} sysctl -qw net.ipv6.conf.default.disable_ipv6=1"),
            format!("ip netns exec {b} sysctl -qw net.ipv6.conf.default.disable_ipv6=1"),
            format!("ip link add ul0 netns {a} type veth peer name ul0 netns {b}"),
            format!("ip -n {a} addr add 192.168.77.1/24 dev ul0"),
            format!("ip -n {b} addr add 192.168.77.2/24 dev ul0"),
            format!("ip -n {a} link set ul0 up"),
            format!("ip -n {b} link set ul0 up"),
            format!("ip -n {a} link set lo up"),
            format!("ip -n {b} link set lo up"),
        ] {
            assert!(sh(&cmd), "{cmd}");
        }
        let dir = std::env::temp_dir().join(&tag);
        std::fs::create_dir_all(&dir).expect("key dir");
        Pair {
            ns: [path_of(a), path_of(b)],
            dir,
            keys: [generate_private_key(), generate_private_key()],
            devices: Vec::new(),
            _guard: guard,
        }
    }

    /// `netd wireguard wg0` in namespace `i` (10.9.0.<i+1>/24), with the other side as
    /// its peer under `peer_key` (its real public key unless a test says otherwise).
    fn command(&self, i: usize, peer_key: [u8; 32]) -> Command {
        let key_file = self.dir.join(format!("key{i}"));
        std::fs::write(&key_file, key_to_base64(&self.keys[i])).expect("write key");
        let other = 1 - i;
        let mut c = Command::new("nsenter");
        c.arg(format!("--net={}", self.ns[i].display()))
            .arg(bin("netd"))
            .args(["wireguard", "wg0", "--listen-port", &PORT.to_string()])
            .arg("--private-key-file")
            .arg(&key_file)
            .args(["--address", &format!("10.9.0.{}/24", i + 1)])
            .arg("--peer")
            .arg(format!(
                "{},192.168.77.{}:{PORT},10.9.0.{}/32",
                key_to_base64(&peer_key),
                other + 1,
                other + 1
            ))
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        c
    }

    /// Starts both devices and waits for both links to be up.
    fn start(&mut self, keys_for: [[u8; 32]; 2]) {
        for (i, k) in keys_for.into_iter().enumerate() {
            let child = self.command(i, k).spawn().expect("spawn netd wireguard");
            self.devices.push(child);
        }
        for ns in &self.ns {
            assert!(
                wait_for(Duration::from_secs(10), || has_link(ns, "wg0")),
                "wg0 never came up in {}",
                ns.display()
            );
        }
    }

    fn public(&self, i: usize) -> [u8; 32] {
        public_key_of(&self.keys[i])
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for c in &mut self.devices {
            let _ = kill(Pid::from_raw(c.id() as i32), Signal::SIGKILL);
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn sh(cmd: &str) -> bool {
    Command::new("bash")
        .args(["-c", cmd])
        .status()
        .is_ok_and(|s| s.success())
}

fn has_link(ns: &Path, name: &str) -> bool {
    nsenter(ns, &["ip", "link", "show", name]).ok()
}

fn wait_for(limit: Duration, mut f: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if f() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// A TCP exchange from namespace `from` to 10.9.0.2:5001 answered in namespace `to`.
fn tcp_exchange(from: &Path, to: &Path) -> Result<String, String> {
    let (listeners, _) = probe::bind_responder(Some(to), vec![5001], vec![]).map_err(|e| e.to_string())?;
    let listener = listeners.into_iter().next().ok_or("no listener")?;
    let server = std::thread::spawn(move || {
        if let Ok((s, _)) = listener.accept() {
            probe::answer(s, "hello through the tunnel\n");
        }
    });
    let addr: SocketAddr = "10.9.0.2:5001".parse().map_err(|_| "addr")?;
    let got = probe::tcp_probe(Some(from), addr, Duration::from_secs(3)).map_err(|e| e.to_string());
    if got.is_ok() {
        let _ = server.join();
    }
    got
}

#[test]
fn tunnel_carries_ping_and_tcp_and_the_wire_only_udp() {
    if no_root() || no_program("tcpdump", "tcpdump") {
        return;
    }
    let mut p = Pair::new();
    p.start([p.public(1), p.public(0)]);
    // Everything on the underlay but ARP, one line a packet.
    let dump = Command::new("nsenter")
        .arg(format!("--net={}", p.ns[0].display()))
        .args([
            "tcpdump",
            "--immediate-mode",
            "-nn",
            "-q",
            "-l",
            "-i",
            "ul0",
            "not arp",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn tcpdump");
    std::thread::sleep(Duration::from_millis(1000));

    // The first ping may wait for the handshake.
    assert!(
        wait_for(Duration::from_secs(5), || ping_from(&p.ns[0], None, "10.9.0.2")),
        "no ping through the tunnel"
    );
    assert!(ping_from(&p.ns[1], None, "10.9.0.1"), "no ping back");
    assert_eq!(
        tcp_exchange(&p.ns[0], &p.ns[1]).as_deref(),
        Ok("hello through the tunnel")
    );

    let _ = kill(Pid::from_raw(dump.id() as i32), Signal::SIGINT);
    let out = dump.wait_with_output().expect("tcpdump output");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(lines.len() >= 6, "too little captured: {text}");
    let port = format!(".{PORT}");
    for l in &lines {
        // "IP 192.168.77.1.51820 > 192.168.77.2.51820: UDP, length 148"
        let udp_on_port = l.contains(" UDP, ") && l.matches(port.as_str()).count() == 2;
        assert!(udp_on_port, "not WireGuard's UDP on the underlay: {l}\n{text}");
        assert!(!l.contains("ICMP") && !l.contains("tcp"), "cleartext: {l}");
    }

    // SIGTERM: the device exits 0 and its link is gone.
    let mut a = p.devices.remove(0);
    kill(Pid::from_raw(a.id() as i32), Signal::SIGTERM).expect("kill");
    let status = a.wait().expect("wait");
    assert!(status.success(), "exit after SIGTERM: {status}");
    assert!(!has_link(&p.ns[0], "wg0"), "wg0 left after SIGTERM");
}

#[test]
fn peer_with_the_wrong_key_gets_nothing_through() {
    if no_root() {
        return;
    }
    let mut p = Pair::new();
    // Side a thinks b has some other key; b knows a's real one. Neither handshake
    // completes: a's initiation is sealed to a key b does not have, and b's names a
    // static key a has no peer for.
    p.start([public_key_of(&generate_private_key()), p.public(0)]);
    assert!(!ping_from(&p.ns[0], None, "10.9.0.2"));
    for _ in 0..3 {
        assert!(!ping_from(&p.ns[1], None, "10.9.0.1"), "ping with a wrong key");
    }
}

#[test]
fn bad_arguments_create_nothing() {
    if no_root() {
        return;
    }
    let p = Pair::new();
    let key = p.dir.join("key");
    std::fs::write(&key, key_to_base64(&p.keys[0])).expect("write key");
    for bad_peer in ["nonsense", "AAAA,192.168.77.2:1,10.9.0.2/32"] {
        let out = Command::new("nsenter")
            .arg(format!("--net={}", p.ns[0].display()))
            .arg(bin("netd"))
            .args(["wireguard", "wgbad", "--listen-port", "51821", "--peer", bad_peer])
            .arg("--private-key-file")
            .arg(&key)
            .output()
            .expect("run netd wireguard");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "accepted --peer {bad_peer}");
        assert_eq!(err.trim().lines().count(), 1, "not one line: {err}");
        assert!(!has_link(&p.ns[0], "wgbad"), "link made for --peer {bad_peer}");
    }
}

/// The API the daemon uses, in-process: `UserWg::start` in each namespace (on a thread
/// that entered it), `set_peers`, `peers`; re-setting a peer with the same key keeps its
/// session, removing it stops traffic, and dropping the device removes its link.
#[test]
fn api_set_peers_keeps_sessions_and_drop_removes_the_link() {
    if no_root() {
        return;
    }
    let p = Pair::new();
    let start = |i: usize| {
        let cfg = WgConfig {
            name: "wgapi".into(),
            private_key: p.keys[i],
            listen_port: PORT + 10,
            mtu: 1420,
            fwmark: 0,
        };
        assert!(
            !format!("{cfg:?}").contains(&key_to_base64(&p.keys[i])),
            "key in Debug"
        );
        let wg = probe::in_netns(Some(&p.ns[i]), move || {
            UserWg::start(cfg).map_err(std::io::Error::other)
        })
        .expect("start device");
        wg.add_address(format!("10.9.0.{}/24", i + 1).parse().unwrap())
            .expect("address");
        wg
    };
    let peer = |i: usize, extra: &[&str]| WgPeer {
        public_key: p.public(i),
        endpoint: Some(format!("192.168.77.{}:{}", i + 1, PORT + 10).parse().unwrap()),
        allowed_ips: std::iter::once(format!("10.9.0.{}/32", i + 1).as_str())
            .chain(extra.iter().copied())
            .map(|c| c.parse().unwrap())
            .collect(),
        keepalive: None,
    };
    let a = start(0);
    let b = start(1);
    a.set_peers(&[peer(1, &[])]).expect("set peers a");
    b.set_peers(&[peer(0, &[])]).expect("set peers b");
    assert!(
        wait_for(Duration::from_secs(5), || ping_from(&p.ns[0], None, "10.9.0.2")),
        "no ping through the API's devices"
    );
    let before = a.peers();
    assert_eq!(before.len(), 1);
    assert_eq!(before[0].public_key, p.public(1));
    assert_eq!(before[0].endpoint, Some("192.168.77.2:51830".parse().unwrap()));
    assert!(before[0].rx_bytes > 0 && before[0].tx_bytes > 0, "{before:?}");
    let hs = before[0].last_handshake.expect("a handshake");

    // Same key, more allowed IPs: the session stays (no new handshake, counters go on).
    a.set_peers(&[peer(1, &["10.9.1.0/24"])]).expect("re-set peers");
    assert!(ping_from(&p.ns[0], None, "10.9.0.2"), "ping after re-set");
    let after = a.peers();
    let hs2 = after[0].last_handshake.expect("still a handshake");
    let drift = hs2.duration_since(hs).unwrap_or_else(|e| e.duration());
    assert!(drift < Duration::from_millis(500), "new handshake: {drift:?}");
    assert!(after[0].rx_bytes > before[0].rx_bytes);

    // No peers: nothing goes through.
    a.set_peers(&[]).expect("no peers");
    assert!(a.peers().is_empty());
    assert!(!ping_from(&p.ns[0], None, "10.9.0.2"), "ping with no peers");

    drop(a);
    assert!(!has_link(&p.ns[0], "wgapi"), "wgapi left after drop");
    drop(b);
}
