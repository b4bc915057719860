//! `LinuxKernel` on real namespaces: each test makes a namespace to act as the daemon's
//! host plus sandbox namespaces, all uniquely named and removed on drop. Nothing is sent
//! outside those namespaces. Needs root (skips otherwise).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use integration::ns::{self, NsGuard};
use integration::skip::no_root;
use netd::firewall::batch::{Element, ElementChange, Family, Part};
use netd::kernel::linux::LinuxKernel;
use netd::kernel::{netns, Kernel};
use netd::plan::{Applied, BridgeSpec, Step, VethSpec};

/// A host namespace with a `LinuxKernel` for it. Fields drop in order: the kernel (its
/// worker thread and socket pin the host namespace) before the namespaces.
struct Env {
    k: LinuxKernel,
    host: PathBuf,
    tag: String,
    guard: NsGuard,
}

impl Env {
    fn new() -> Env {
        let mut guard = NsGuard::new();
        let host = guard.reserve();
        netns::create(&host).expect("create host netns");
        let k = LinuxKernel::for_netns(&host).expect("kernel for host netns");
        Env {
            k,
            host,
            tag: ns::unique_tag(),
            guard,
        }
    }

    fn sandbox(&mut self) -> PathBuf {
        let p = self.guard.reserve();
        self.k
            .apply(&Step::CreateNetns { path: p.clone() })
            .expect("create sandbox netns");
        p
    }

    fn bridge(&self, ipv6: bool, subnet: u8) -> BridgeSpec {
        let mut addrs = vec![format!("10.213.{subnet}.1/24").parse().expect("cidr")];
        if ipv6 {
            addrs.push(format!("fd00:213:{subnet}::1/64").parse().expect("cidr"));
        }
        BridgeSpec {
            name: format!("ndb{}", self.tag),
            alias: format!("netd:net=t{}", self.tag),
            mtu: 0,
            addrs,
            ipv6,
            vlan_filtering: false,
            trunk: false,
            promisc: false,
            vips: Vec::new(),
            nf_call: false,
            mac_seed: String::new(),
        }
    }

    fn veth(&self, b: &BridgeSpec, sandbox: &Path, n: u8) -> VethSpec {
        let mut addrs = vec![format!("10.213.{}.{n}/24", subnet_of(b)).parse().expect("cidr")];
        if b.ipv6 {
            addrs.push(
                format!("fd00:213:{}::{n}/64", subnet_of(b))
                    .parse()
                    .expect("cidr"),
            );
        }
        VethSpec {
            host_name: format!("ndv{}x{n}", self.tag),
            bridge: b.name.clone(),
            alias: format!("netd:ep=s{n}/t{}", self.tag),
            mtu: 1400,
            netns: sandbox.to_path_buf(),
            ifname: "eth0".into(),
            mac: [0x02, 0x42, 0x0a, 0xd5, subnet_of(b), n],
            addrs,
            gw4: Some(format!("10.213.{}.1", subnet_of(b)).parse().expect("ip")),
            gw6: b
                .ipv6
                .then(|| format!("fd00:213:{}::1", subnet_of(b)).parse().expect("ip")),
            // An extra route per family: on-link for IPv4, via the gateway for IPv6.
            routes: std::iter::once(netd::model::Route {
                dst: "10.214.0.0/16".parse().expect("cidr"),
                gw: None,
            })
            .chain(b.ipv6.then(|| netd::model::Route {
                dst: "fd00:214::/48".parse().expect("cidr"),
                gw: Some(format!("fd00:213:{}::1", subnet_of(b)).parse().expect("ip")),
            }))
            .collect(),
            vlan: None,
            hairpin: true,
            trunk: Vec::new(),
            arp_retrans_ms: None,
        }
    }

    /// `ip -n HOST ARGS...` succeeded.
    fn ip_host(&self, args: &[&str]) -> bool {
        ip_in(&self.host, args)
    }
}

fn ip_in(ns: &Path, args: &[&str]) -> bool {
    let name = ns.file_name().and_then(|n| n.to_str()).expect("ns name");
    Command::new("ip")
        .args(["-n", name])
        .args(args)
        .status()
        .is_ok_and(|s| s.success())
}

fn ip_out(ns: &Path, args: &[&str]) -> String {
    let name = ns.file_name().and_then(|n| n.to_str()).expect("ns name");
    let o = Command::new("ip")
        .args(["-n", name])
        .args(args)
        .output()
        .expect("run ip");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Pings `addr` from `from`; on failure prints what `ip` sees, then panics.
fn assert_ping(env: &Env, from: &Path, addr: &str) {
    if ns::ping(from, addr) {
        return;
    }
    for (ns, args) in [
        (env.host.as_path(), &["-d", "link"][..]),
        (env.host.as_path(), &["addr"][..]),
        (from, &["addr"][..]),
        (from, &["route"][..]),
        (from, &["neigh"][..]),
    ] {
        eprintln!("ip -n {} {}:\n{}", ns.display(), args.join(" "), ip_out(ns, args));
    }
    panic!("ping {addr} from {} failed", from.display());
}

fn subnet_of(b: &BridgeSpec) -> u8 {
    b.addrs[0]
        .ip()
        .to_string()
        .split('.')
        .nth(2)
        .expect("octet")
        .parse()
        .expect("u8")
}

#[test]
fn bridge_ensure_is_idempotent_and_refuses_foreign_links() {
    if no_root() {
        return;
    }
    let env = Env::new();
    let mut b = env.bridge(false, 1);
    let made = env
        .k
        .apply(&Step::EnsureBridge(b.clone()))
        .expect("create bridge");
    let again = env.k.apply(&Step::EnsureBridge(b.clone())).expect("ensure again");
    // Only the first made it, so only its plan would delete it on undo.
    assert_eq!((made, again), (Applied::Made, Applied::Found));

    // A second ensure brings an existing bridge in line with the spec.
    b.mtu = 1450;
    b.addrs = vec!["10.213.9.1/24".parse().expect("cidr")];
    env.k
        .apply(&Step::EnsureBridge(b.clone()))
        .expect("ensure with changes");
    let show = ip_out(&env.host, &["addr", "show", "dev", &b.name]);
    assert!(show.contains("mtu 1450"), "{show}");
    assert!(
        show.contains("10.213.9.1/24") && !show.contains("10.213.1.1"),
        "{show}"
    );
    assert!(show.contains("state UP") || show.contains(",UP"), "{show}");
    // IPv4-only bridge: no link-local address.
    assert!(!show.contains("inet6"), "{show}");

    // Same name, another alias: somebody else's network.
    let mut other = b.clone();
    other.alias = "netd:net=someone-else".into();
    let err = env
        .k
        .apply(&Step::EnsureBridge(other))
        .expect_err("alias mismatch");
    assert!(err.to_string().contains("is not netd's"), "{err}");

    // Same name, not a bridge.
    let foreign = format!("ndf{}", env.tag);
    assert!(env.ip_host(&[
        "link",
        "add",
        &foreign,
        "type",
        "veth",
        "peer",
        "name",
        &format!("{foreign}p")
    ]));
    let mut spec = env.bridge(false, 2);
    spec.name = foreign.clone();
    let err = env.k.apply(&Step::EnsureBridge(spec)).expect_err("foreign link");
    assert!(
        err.to_string()
            .contains(&format!("link {foreign} exists and is not netd's")),
        "{err}"
    );
    // Refusing must not have touched it.
    assert!(env.k.link_exists(&foreign, None).expect("query"));
}

#[test]
fn sandboxes_on_one_bridge_ping_each_other_over_v4_and_v6() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let (a, c) = (env.sandbox(), env.sandbox());
    let b = env.bridge(true, 3);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");
    let (va, vc) = (env.veth(&b, &a, 2), env.veth(&b, &c, 3));
    let t = Instant::now();
    env.k.apply(&Step::CreateVeth(va.clone())).expect("veth a");
    println!("CreateVeth took {:?}", t.elapsed());
    env.k.apply(&Step::CreateVeth(vc)).expect("veth c");

    assert_ping(&env, &a, "10.213.3.3");
    assert_ping(&env, &c, "10.213.3.2");
    assert_ping(&env, &a, "10.213.3.1");
    assert_ping(&env, &a, "fd00:213:3::3");
    assert_ping(&env, &c, "fd00:213:3::1");

    // The peer got its name, MAC, MTU and default routes inside the sandbox.
    let link = ip_out(&a, &["link", "show", "eth0"]);
    assert!(
        link.contains("02:42:0a:d5:03:02") && link.contains("mtu 1400"),
        "{link}"
    );
    assert!(ip_out(&a, &["route"]).contains("default via 10.213.3.1 dev eth0"));
    assert!(ip_out(&a, &["-6", "route"]).contains("default via fd00:213:3::1 dev eth0"));
    assert!(ip_out(&a, &["route"]).contains("10.214.0.0/16 dev eth0 scope link"));
    assert!(ip_out(&a, &["-6", "route"]).contains("fd00:214::/48 via fd00:213:3::1 dev eth0"));
    // The host side is an up bridge port in hairpin mode, under its final alias, with
    // no IPv6 address of its own (addrgenmode none), not even a link-local one.
    let host_side = ip_out(&env.host, &["-d", "addr", "show", "dev", &va.host_name]);
    assert!(host_side.contains(&format!("master {}", b.name)), "{host_side}");
    assert!(!host_side.contains("inet6"), "{host_side}");
    let link = ip_out(&env.host, &["-d", "link", "show", "dev", &va.host_name]);
    assert!(link.contains("addrgenmode none"), "{link}");
    assert!(host_side.contains("hairpin on"), "{host_side}");
    assert!(
        host_side.contains(",UP,") || host_side.contains(",UP>"),
        "{host_side}"
    );
    assert!(host_side.contains(&format!("alias {}", va.alias)), "{host_side}");
}

/// A promiscuous bridge (CNI `promiscMode`, `netd.bridge.promisc`): PROMISC on the
/// bridge, also when it existed before (ensure), and its ports without hairpin mode.
#[test]
fn a_promiscuous_bridge_has_ports_without_hairpin() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let s = env.sandbox();
    let mut b = env.bridge(false, 5);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");
    let flags = |env: &Env| ip_out(&env.host, &["link", "show", "dev", &b.name]);
    assert!(!flags(&env).contains("PROMISC"), "{}", flags(&env));
    b.promisc = true;
    env.k
        .apply(&Step::EnsureBridge(b.clone()))
        .expect("ensure promisc");
    assert!(flags(&env).contains("PROMISC"), "{}", flags(&env));
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("ensure again");
    assert!(flags(&env).contains("PROMISC"), "{}", flags(&env));
    let mut v = env.veth(&b, &s, 2);
    v.hairpin = false;
    env.k.apply(&Step::CreateVeth(v.clone())).expect("veth");
    let port = ip_out(&env.host, &["-d", "link", "show", "dev", &v.host_name]);
    assert!(port.contains("hairpin off"), "{port}");
    assert_ping(&env, &s, "10.213.5.1");
    // Made promiscuous from the start.
    let mut b2 = env.bridge(false, 6);
    b2.name = format!("ndp{}", env.tag);
    b2.promisc = true;
    env.k
        .apply(&Step::EnsureBridge(b2.clone()))
        .expect("new promisc bridge");
    let l = ip_out(&env.host, &["link", "show", "dev", &b2.name]);
    assert!(l.contains("PROMISC"), "{l}");
}

#[test]
fn delete_link_and_netns_twice_is_ok() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let s = env.sandbox();
    let b = env.bridge(false, 4);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");
    let v = env.veth(&b, &s, 2);
    env.k.apply(&Step::CreateVeth(v.clone())).expect("veth");
    assert!(env.k.link_exists("eth0", Some(&s)).expect("query"));

    let del_peer = Step::DeleteLink {
        name: "eth0".into(),
        netns: Some(s.clone()),
    };
    env.k.apply(&del_peer).expect("delete peer");
    env.k.apply(&del_peer).expect("delete peer again");
    // Deleting one end took the other with it.
    assert!(!env.k.link_exists(&v.host_name, None).expect("query"));
    let del_host = Step::DeleteLink {
        name: v.host_name.clone(),
        netns: None,
    };
    env.k.apply(&del_host).expect("delete gone host side");

    let del_ns = Step::DeleteNetns { path: s.clone() };
    assert!(env.k.netns_alive(&s));
    env.k.apply(&del_ns).expect("delete netns");
    env.k.apply(&del_ns).expect("delete netns again");
    assert!(!env.k.netns_alive(&s) && !s.exists());
    // A link in a namespace that is gone is gone too.
    env.k.apply(&del_peer).expect("delete in gone netns");
    assert!(!env.k.link_exists("eth0", Some(&s)).expect("query"));
}

#[test]
fn owned_links_finds_only_alias_marked_links() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let s = env.sandbox();
    let b = env.bridge(false, 5);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");
    let v = env.veth(&b, &s, 2);
    env.k.apply(&Step::CreateVeth(v.clone())).expect("veth");
    let plain = format!("ndp{}", env.tag);
    let aliased = format!("nda{}", env.tag);
    // veths, not dummies: the test VM may lack the dummy module.
    for l in [&plain, &aliased] {
        assert!(env.ip_host(&["link", "add", l, "type", "veth", "peer", "name", &format!("{l}p")]));
    }
    assert!(env.ip_host(&["link", "set", &aliased, "alias", "docker:not-ours"]));

    let mut owned = env.k.owned_links().expect("owned links");
    owned.sort_by(|x, y| x.name.cmp(&y.name));
    let summary: Vec<_> = owned
        .iter()
        .map(|l| (l.name.as_str(), l.kind.as_str(), l.master.as_deref()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (b.name.as_str(), "bridge", None),
            (v.host_name.as_str(), "veth", Some(b.name.as_str())),
        ]
    );
    assert_eq!(owned[0].alias, b.alias);
    assert_eq!(owned[1].alias, v.alias);
}

#[test]
fn routed_prefixes_and_local_addrs_see_the_bridge() {
    if no_root() {
        return;
    }
    let env = Env::new();
    let b = env.bridge(true, 6);
    env.k.apply(&Step::EnsureBridge(b)).expect("bridge");
    let prefixes = env.k.routed_prefixes().expect("routes");
    assert!(
        prefixes.contains(&"10.213.6.0/24".parse().expect("cidr")),
        "{prefixes:?}"
    );
    assert!(
        prefixes.contains(&"fd00:213:6::/64".parse().expect("cidr")),
        "{prefixes:?}"
    );
    assert!(prefixes.iter().all(|p| p.prefix() != 0), "no default routes");
    let addrs = env.k.local_addrs().expect("addrs");
    assert!(addrs.contains(&"10.213.6.1".parse().expect("ip")), "{addrs:?}");
    assert!(addrs.contains(&"127.0.0.1".parse().expect("ip")), "{addrs:?}");
}

#[test]
fn failed_create_veth_leaves_no_host_link() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let b = env.bridge(false, 7);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");

    // The sandbox namespace does not exist.
    let missing = ns::path_of(&ns::unique_name());
    let v = env.veth(&b, &missing, 2);
    let err = env
        .k
        .apply(&Step::CreateVeth(v.clone()))
        .expect_err("missing netns");
    assert!(err.to_string().contains(&missing.display().to_string()), "{err}");
    assert!(!env.k.link_exists(&v.host_name, None).expect("query"));

    // A failure after the pair exists (gateway outside the subnet): the pair is removed.
    let s = env.sandbox();
    let mut v = env.veth(&b, &s, 3);
    v.gw4 = Some("192.0.2.1".parse().expect("ip"));
    let err = env
        .k
        .apply(&Step::CreateVeth(v.clone()))
        .expect_err("bad gateway");
    assert!(
        err.to_string().contains("add default route via 192.0.2.1"),
        "{err}"
    );
    assert!(!env.k.link_exists(&v.host_name, None).expect("query"));
    assert!(!env.k.link_exists("eth0", Some(&s)).expect("query"));

    // And the same veth then succeeds: nothing was left to clash with.
    v.gw4 = Some("10.213.7.1".parse().expect("ip"));
    env.k.apply(&Step::CreateVeth(v)).expect("retry");
}

#[test]
fn bind_host_netns_exposes_the_daemons_namespace() {
    if no_root() {
        return;
    }
    let mut env = Env::new();
    let b = env.bridge(false, 8);
    env.k.apply(&Step::EnsureBridge(b.clone())).expect("bridge");
    let p = env.guard.reserve();
    env.k
        .apply(&Step::BindHostNetns { path: p.clone() })
        .expect("bind host netns");
    assert!(env.k.netns_alive(&p));
    // The bound path is the host namespace: it has the bridge.
    assert!(ip_in(&p, &["link", "show", &b.name]));
    // Binding twice is refused rather than stacking mounts.
    assert!(env.k.apply(&Step::BindHostNetns { path: p.clone() }).is_err());
    env.k
        .apply(&Step::DeleteNetns { path: p.clone() })
        .expect("unbind");
    assert!(!env.k.netns_alive(&p));
    // Unbinding did not kill the host namespace.
    assert!(env.k.link_exists(&b.name, None).expect("query"));
}

#[test]
fn sysctl_step_writes_in_the_host_namespace() {
    if no_root() {
        return;
    }
    let env = Env::new();
    env.k
        .apply(&Step::Sysctl {
            key: "net/ipv4/conf/all/rp_filter".into(),
            value: "2".into(),
        })
        .expect("sysctl");
    let out = Command::new("ip")
        .args(["netns", "exec"])
        .arg(env.host.file_name().expect("name"))
        .args(["cat", "/proc/sys/net/ipv4/conf/all/rp_filter"])
        .output()
        .expect("run ip");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "2");
}

/// The RCU lookups (device ioctls) netd-cni uses where a route-socket request could wait
/// for RTNL: they agree with RTM_GETLINK, and say "none" once the link is gone.
#[test]
fn rcu_lookups_agree_with_getlink() {
    if no_root() {
        return;
    }
    let env = Env::new();
    let br = env.bridge(false, 31);
    env.k.apply(&Step::EnsureBridge(br.clone())).expect("bridge");
    assert!(env.k.host_link_listed(&br.name).expect("lookup"));
    assert!(!env
        .k
        .host_link_listed(&format!("ndz{}", env.tag))
        .expect("lookup"));
    let mut nl = netd::kernel::netlink::Netlink::open_in(&env.host).expect("route socket");
    let link = nl.link(&br.name).expect("getlink").expect("the bridge");
    assert_eq!(nl.index_rcu(&br.name).expect("by name"), Some(link.index));
    assert_eq!(nl.name_rcu(link.index).expect("by index"), Some(br.name.clone()));
    assert!(nl.index_rcu("a-name-longer-than-ifnamsiz").is_err());
    env.k
        .apply(&Step::DeleteLink {
            name: br.name.clone(),
            netns: None,
        })
        .expect("delete");
    assert_eq!(nl.name_rcu(link.index).expect("by index"), None);
    assert!(!env.k.host_link_listed(&br.name).expect("lookup"));
}

/// A failed netlink request carries the kernel's errno as data (`KernelError::Netlink
/// { errno, .. }`), so a caller can act on EEXIST or ENODEV without reading the message.
#[test]
fn netlink_errors_carry_the_kernels_errno() {
    use netd::kernel::KernelError;
    use nix::errno::Errno;
    if no_root() {
        return;
    }
    let env = Env::new();
    let br = env.bridge(false, 32);
    let mut nl = netd::kernel::netlink::Netlink::open_in(&env.host).expect("route socket");
    nl.add_bridge(&br.name, 0, None).expect("first add");
    let errno = |r: Result<(), KernelError>| match r {
        Err(KernelError::Netlink { errno, msg, .. }) => (errno, msg),
        other => panic!("expected a netlink error, got {other:?}"),
    };
    let (e, msg) = errno(nl.add_bridge(&br.name, 0, None));
    assert_eq!(e, Some(Errno::EEXIST), "{msg}");
    let (e, msg) = errno(nl.set_mtu(&format!("ndz{}", env.tag), 1400));
    assert_eq!(e, Some(Errno::ENODEV), "{msg}");
    let (e, _) = errno(nl.add_bridge("a name with spaces", 0, None));
    assert_eq!(e, Some(Errno::EINVAL));
    assert!(nl.delete_link(&br.name).expect("delete"));
}

/// What a detached child of netd-cni waits for before it closes an nfnetlink socket
/// (`detach::wait_until_quiet`): the nf_tables generation moves with every commit, and
/// the wait does not end while commits go on, but soon after they stop.
#[test]
fn nft_quiet_wait_outlasts_a_stream_of_commits() {
    if no_root() {
        return;
    }
    let env = Env::new();
    let table = format!("ndq{}", env.tag);
    let nft = |cmd: &str| {
        let ok = Command::new("ip")
            .args(["netns", "exec"])
            .arg(env.host.file_name().expect("netns name"))
            .args(["nft", cmd])
            .status()
            .expect("run nft")
            .success();
        assert!(ok, "nft {cmd}");
    };
    nft(&format!("add table inet {table}"));
    let host = env.host.clone();
    let mut conn = netns::run_in(&env.host, netd::kernel::nft_elements::Conn::open)
        .expect("enter host")
        .expect("nfnetlink socket");
    let g0 = conn.generation().expect("generation");
    nft(&format!("add set inet {table} s {{ type ipv4_addr; }}"));
    let g1 = conn.generation().expect("generation");
    assert!(g1 != g0, "a commit moves the generation ({g0} -> {g1})");
    assert_eq!(conn.generation(), Some(g1), "no commit, same generation");

    // Commits back to back for 400 ms (adding and deleting an element, as ADD and DEL
    // do: a deletion's memory is freed after a grace period), on a socket of a thread
    // of its own, while the wait runs. A commit takes ~0.1 ms and two grace periods at
    // least a scheduler tick, so no quiet spell of two grace periods can come up. The
    // thread runs SCHED_FIFO so that no other thread can hold it off for that long.
    // (With a 1 ms sleep between commits the full suite failed once: the wait rightly
    // ended on a gap of two grace periods.)
    let stop_at = Instant::now() + std::time::Duration::from_millis(400);
    let change = |add| ElementChange {
        add,
        family: Family::Inet,
        table: table.clone(),
        set: "s".into(),
        elems: vec![Element {
            key: vec![Part::Ipv4([10, 9, 9, 9].into())],
            value: None,
        }],
    };
    let (add, del) = (change(true), change(false));
    let committer = std::thread::spawn(move || {
        let rt = libc::sched_param { sched_priority: 1 };
        // SAFETY: sets this thread's policy; no memory is involved.
        let fifo = unsafe { libc::sched_setscheduler(0, libc::SCHED_FIFO, &rt) } == 0;
        assert!(fifo, "SCHED_FIFO: {}", std::io::Error::last_os_error());
        let mut c = netns::run_in(&host, netd::kernel::nft_elements::Conn::open)
            .expect("enter host")
            .expect("nfnetlink socket");
        let mut n = 0;
        while Instant::now() < stop_at {
            c.apply(&[if n % 2 == 0 { &add } else { &del }]).expect("commit");
            n += 1;
        }
        n
    });
    std::thread::sleep(std::time::Duration::from_millis(20));
    conn.wait_until_quiet();
    let waited_until = Instant::now();
    let commits = committer.join().expect("committer");
    assert!(commits > 100, "only {commits} commits");
    assert!(
        waited_until >= stop_at,
        "the wait ended {:?} before the commits stopped",
        stop_at - waited_until
    );
    assert!(
        waited_until < stop_at + std::time::Duration::from_secs(2),
        "the wait went on {:?} after the last commit",
        waited_until - stop_at
    );
    nft(&format!("delete table inet {table}"));
}
