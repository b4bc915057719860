//! The CNI operations on netd's engine over the fake kernel and the memory store (the
//! standalone backend without its lock): results per version, idempotent DEL, several
//! networks per container, CHECK, GC, STATUS.

use std::path::PathBuf;
use std::sync::Arc;

use netd::engine::{Engine, EngineConfig};
use netd::kernel::fake::FakeKernel;
use netd::store::MemStore;
use serde_json::{json, Value};

use super::*;
use crate::backend::standalone::Standalone;
use crate::env::{CniArgs, Command};

struct T {
    b: Standalone,
    k: Arc<FakeKernel>,
    dir: PathBuf,
}

impl Drop for T {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn setup() -> T {
    let dir = std::env::temp_dir().join(format!("netd-cni-ops-{}-{}", std::process::id(), rand_u32()));
    std::fs::create_dir_all(dir.join("netns")).unwrap();
    let cfg = EngineConfig {
        netns_dir: dir.join("netns"),
        etc_netns_dir: dir.join("etc"),
        ..Default::default()
    };
    let k = Arc::new(FakeKernel::default());
    let (e, _) = Engine::open(k.clone(), Arc::new(MemStore::default()), cfg).unwrap();
    T {
        b: Standalone::with_engine(e, dir.join("dirty")).unwrap(),
        k,
        dir,
    }
}

fn rand_u32() -> u32 {
    use std::time::{SystemTime, UNIX_EPOCH};
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .subsec_nanos()
        ^ N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// A file standing in for a runtime's namespace.
fn mk(k: &FakeKernel, dir: &std::path::Path, name: &str) -> String {
    use netd::kernel::Kernel;
    let p = dir.join("netns").join(name);
    std::fs::write(&p, b"").unwrap();
    k.apply(&netd::plan::Step::CreateNetns { path: p.clone() })
        .unwrap();
    p.display().to_string()
}

fn conf(v: Value) -> NetConf {
    let mut base = json!({
        "cniVersion": "1.1.0",
        "name": "podnet",
        "type": "netd-cni",
        "ipam": {"type": "netd", "subnet": "10.88.0.0/24"}
    });
    for (k, x) in v.as_object().unwrap() {
        base[k] = x.clone();
    }
    crate::conf::parse(&serde_json::to_vec(&base).unwrap()).unwrap()
}

fn env(cmd: Command, cid: &str, netns: &str, ifname: &str) -> Env {
    Env {
        command: cmd,
        container_id: cid.into(),
        netns: Some(netns.into()),
        ifname: ifname.into(),
        args: CniArgs::default(),
        path: vec![],
    }
}

#[test]
fn add_result_per_version() {
    let mut t = setup();
    for (i, v) in ["0.3.0", "0.3.1", "0.4.0", "1.0.0", "1.1.0"].iter().enumerate() {
        let c = conf(json!({"cniVersion": v}));
        let cid = format!("c{i}");
        let r = add(
            &mut t.b,
            &c,
            &env(Command::Add, &cid, &mk(&t.k, &t.dir, &cid), "eth0"),
        )
        .unwrap();
        assert_eq!(r["cniVersion"], *v);
        assert_eq!(r["interfaces"][0]["name"], "netd-podnet");
        assert_eq!(r["interfaces"][2]["name"], "eth0");
        assert!(r["interfaces"][2]["mac"].as_str().unwrap().len() == 17);
        let ip = &r["ips"][0];
        assert!(ip["address"].as_str().unwrap().starts_with("10.88.0."), "{r}");
        assert_eq!(ip["address"].as_str().unwrap().split('/').nth(1), Some("24"));
        assert_eq!(ip["gateway"], "10.88.0.1");
        assert_eq!(ip["interface"], 2);
        assert_eq!(ip.get("version").is_some(), v.starts_with("0."), "{v}: {ip}");
        assert_eq!(r["routes"][0], json!({"dst": "0.0.0.0/0", "gw": "10.88.0.1"}));
    }
    // Five containers, five distinct addresses.
    let mut ips: Vec<_> =
        t.b.engine()
            .sandboxes()
            .map(|s| s.endpoints[0].ipv4.unwrap().ip())
            .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 5);
}

#[test]
fn repeated_add_is_stable_and_del_is_idempotent() {
    let mut t = setup();
    let c = conf(json!({}));
    let ns = mk(&t.k, &t.dir, "a");
    let e = env(Command::Add, "ctr-a", &ns, "eth0");
    let r1 = add(&mut t.b, &c, &e).unwrap();
    let r2 = add(&mut t.b, &c, &e).unwrap();
    assert_eq!(r1, r2);
    for _ in 0..3 {
        del(&mut t.b, &c, &e).unwrap();
    }
    assert_eq!(t.b.engine().sandboxes().count(), 0);
    assert_eq!(t.b.free_addresses("podnet").unwrap(), Some(253));
    // DEL for a container never seen, and of a network netd does not have.
    del(&mut t.b, &c, &env(Command::Del, "never", "", "eth0")).unwrap();
    del(&mut t.b, &conf(json!({"name": "other"})), &e).unwrap();
    // ADD into a namespace that does not exist: unknown container.
    let err = add(&mut t.b, &c, &env(Command::Add, "x", "/nonexistent/ns", "eth0")).unwrap_err();
    assert_eq!(err.code, code::UNKNOWN_CONTAINER);
}

#[test]
fn two_networks_one_container() {
    let mut t = setup();
    let ns = mk(&t.k, &t.dir, "m");
    let a = conf(json!({"name": "neta", "ipam": {"subnet": "10.91.0.0/24"}}));
    let b = conf(json!({"name": "netb", "ipam": {"subnet": "10.92.0.0/24"}}));
    let ra = add(&mut t.b, &a, &env(Command::Add, "multi", &ns, "eth0")).unwrap();
    let rb = add(&mut t.b, &b, &env(Command::Add, "multi", &ns, "eth1")).unwrap();
    assert!(ra["ips"][0]["address"].as_str().unwrap().starts_with("10.91.0."));
    assert!(rb["ips"][0]["address"].as_str().unwrap().starts_with("10.92.0."));
    assert_eq!(rb["interfaces"][2]["name"], "eth1");
    // The default route is the first network's; the result of the second says so.
    assert_eq!(ra["routes"][0]["dst"], "0.0.0.0/0", "{ra}");
    assert_eq!(rb["routes"], json!([]), "{rb}");
    let sb = t.b.engine().sandbox(&sandbox_name("multi")).unwrap().clone();
    assert_eq!(sb.endpoints.len(), 2);
    // The same network again under another name: refused, nothing changes.
    let err = add(&mut t.b, &a, &env(Command::Add, "multi", &ns, "eth2")).unwrap_err();
    assert_eq!(err.code, code::NETD_REFUSED);
    // DEL with the wrong ifname leaves the attachment.
    del(&mut t.b, &a, &env(Command::Del, "multi", &ns, "eth9")).unwrap();
    assert_eq!(t.b.engine().sandbox(&sb.name).unwrap().endpoints.len(), 2);
    del(&mut t.b, &a, &env(Command::Del, "multi", &ns, "eth0")).unwrap();
    assert_eq!(t.b.engine().sandbox(&sb.name).unwrap().endpoints.len(), 1);
    del(&mut t.b, &b, &env(Command::Del, "multi", &ns, "eth1")).unwrap();
    assert!(t.b.engine().sandbox(&sb.name).is_err());
}

#[test]
fn static_ip_mac_ports_and_pod_labels() {
    let mut t = setup();
    let ns = mk(&t.k, &t.dir, "s");
    let c = conf(json!({"runtimeConfig": {
        "ips": ["10.88.0.77/24"], "mac": "02:aa:bb:cc:dd:ee",
        "portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}}));
    let mut e = env(Command::Add, "st", &ns, "eth0");
    e.args = crate::env::parse_cni_args("IgnoreUnknown=1;K8S_POD_NAME=web-0;K8S_POD_NAMESPACE=prod").unwrap();
    let r = add(&mut t.b, &c, &e).unwrap();
    assert_eq!(r["ips"][0]["address"], "10.88.0.77/24");
    assert_eq!(r["interfaces"][2]["mac"], "02:aa:bb:cc:dd:ee");
    let sb = t.b.engine().sandbox(&sandbox_name("st")).unwrap();
    assert_eq!(sb.ports.len(), 1);
    assert_eq!((sb.ports[0].host_port, sb.ports[0].container_port), (8080, 80));
    assert_eq!(sb.labels.get(LABEL_POD).map(String::as_str), Some("web-0"));
    assert_eq!(sb.labels.get(LABEL_POD_NS).map(String::as_str), Some("prod"));
    // The same static address for another container: refused with netd's reason.
    let err = add(
        &mut t.b,
        &c,
        &env(Command::Add, "st2", &mk(&t.k, &t.dir, "s2"), "eth0"),
    )
    .unwrap_err();
    assert_eq!(err.code, code::NETD_REFUSED);
    assert!(t.b.engine().sandbox(&sandbox_name("st2")).is_err());
}

#[test]
fn existing_network_with_other_subnet_is_a_config_error() {
    let mut t = setup();
    add(
        &mut t.b,
        &conf(json!({})),
        &env(Command::Add, "x1", &mk(&t.k, &t.dir, "x1"), "eth0"),
    )
    .unwrap();
    let other = conf(json!({"ipam": {"subnet": "10.99.0.0/24"}}));
    let err = add(
        &mut t.b,
        &other,
        &env(Command::Add, "x2", &mk(&t.k, &t.dir, "x2"), "eth0"),
    )
    .unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
    let other = conf(json!({"bridge": "br-other"}));
    let err = add(
        &mut t.b,
        &other,
        &env(Command::Add, "x3", &mk(&t.k, &t.dir, "x3"), "eth0"),
    )
    .unwrap_err();
    assert_eq!(err.code, code::INVALID_CONFIG);
}

#[test]
fn chained_after_another_plugin() {
    let mut t = setup();
    let prev = json!({"cniVersion": "1.0.0",
        "interfaces": [{"name": "lo0"}], "ips": [{"address": "192.0.2.5/32", "interface": 0}],
        "routes": [{"dst": "192.0.2.0/24"}], "dns": {"nameservers": ["192.0.2.53"]}});
    let c = conf(json!({"cniVersion": "1.0.0", "prevResult": prev}));
    let r = add(
        &mut t.b,
        &c,
        &env(Command::Add, "ch", &mk(&t.k, &t.dir, "ch"), "eth0"),
    )
    .unwrap();
    assert_eq!(r["interfaces"].as_array().unwrap().len(), 4);
    assert_eq!(r["interfaces"][3]["name"], "eth0");
    assert_eq!(r["ips"][0]["address"], "192.0.2.5/32");
    assert_eq!(r["ips"][1]["interface"], 3);
    assert_eq!(r["routes"].as_array().unwrap().len(), 2);
    assert_eq!(r["dns"]["nameservers"][0], "192.0.2.53");
}

#[test]
fn check_compares_prev_result_and_kernel() {
    let mut t = setup();
    let ns = mk(&t.k, &t.dir, "k");
    let c = conf(
        json!({"ipam": {"type": "netd", "subnet": "10.88.0.0/24", "routes": [{"dst": "10.50.0.0/16"}]}}),
    );
    let e = env(Command::Add, "chk", &ns, "eth0");
    let r = add(&mut t.b, &c, &e).unwrap();
    let with_prev = |p: Value| {
        let mut c = c.clone();
        c.prev_result = Some(p);
        c
    };
    let addr: IpNetwork = r["ips"][0]["address"].as_str().unwrap().parse().unwrap();
    let gw = r["ips"][0]["gateway"].as_str().unwrap().parse().ok();
    let kernel = InterfaceConfig {
        addrs: vec![addr],
        routes: vec![("10.50.0.0/16".parse().unwrap(), gw)],
    };
    let yes = |_: &str, _: &str| Some(kernel.clone());
    check(&mut t.b, &with_prev(r.clone()), &e, &yes).unwrap();
    // The kernel side: interface missing, address gone, route gone.
    let missing = |_: &str, _: &str| None;
    let no_addr = |_: &str, _: &str| {
        Some(InterfaceConfig {
            addrs: vec![],
            ..kernel.clone()
        })
    };
    let no_route = |_: &str, _: &str| {
        Some(InterfaceConfig {
            routes: vec![],
            ..kernel.clone()
        })
    };
    for (what, f) in [
        (
            "missing",
            &missing as &dyn Fn(&str, &str) -> Option<InterfaceConfig>,
        ),
        ("address", &no_addr),
        ("route to 10.50.0.0/16", &no_route),
    ] {
        let err = check(&mut t.b, &with_prev(r.clone()), &e, f).unwrap_err();
        assert_eq!(err.code, code::NETD_REFUSED, "{what}");
        assert!(err.msg.contains(what), "{what}: {}", err.msg);
    }
    let mut wrong = r.clone();
    wrong["ips"][0]["address"] = "10.88.0.200/24".into();
    assert_eq!(
        check(&mut t.b, &with_prev(wrong), &e, &yes).unwrap_err().code,
        code::NETD_REFUSED
    );
    assert_eq!(
        check(&mut t.b, &c, &e, &yes).unwrap_err().code,
        code::INVALID_CONFIG
    );
    let mut old = with_prev(r.clone());
    old.cni_version = "0.3.1".into();
    assert_eq!(
        check(&mut t.b, &old, &e, &yes).unwrap_err().code,
        code::INCOMPATIBLE_VERSION
    );
    del(&mut t.b, &c, &e).unwrap();
    assert_eq!(
        check(&mut t.b, &with_prev(r), &e, &yes).unwrap_err().code,
        code::UNKNOWN_CONTAINER
    );
}

#[test]
fn gc_keeps_only_valid_attachments() {
    let mut t = setup();
    let c = conf(json!({}));
    for id in ["g1", "g2", "g3"] {
        add(
            &mut t.b,
            &c,
            &env(Command::Add, id, &mk(&t.k, &t.dir, id), "eth0"),
        )
        .unwrap();
    }
    // Another network's attachment is not this GC's business.
    let other = conf(json!({"name": "othernet", "ipam": {"subnet": "10.89.0.0/24"}}));
    add(
        &mut t.b,
        &other,
        &env(Command::Add, "g9", &mk(&t.k, &t.dir, "g9"), "eth0"),
    )
    .unwrap();
    let gc_conf = conf(json!({"cni.dev/valid-attachments": [{"containerID": "g2", "ifname": "eth0"}]}));
    let mut removed = gc(&mut t.b, &gc_conf).unwrap();
    removed.sort();
    assert_eq!(
        removed,
        vec![("g1".into(), "eth0".into()), ("g3".into(), "eth0".into())]
    );
    let left: Vec<String> =
        t.b.engine()
            .sandboxes()
            .map(|s| s.labels[LABEL_CONTAINER].clone())
            .collect();
    assert_eq!(left, {
        let mut l = vec!["g2".to_string(), "g9".to_string()];
        l.sort_by_key(|c| sandbox_name(c));
        l
    });
    assert_eq!(t.b.free_addresses("podnet").unwrap(), Some(252));
    let old = conf(json!({"cniVersion": "1.0.0"}));
    assert_eq!(gc(&mut t.b, &old).unwrap_err().code, code::INCOMPATIBLE_VERSION);
}

#[test]
fn status_51_when_the_pool_is_exhausted() {
    let mut t = setup();
    let c = conf(json!({"ipam": {"subnet": "10.66.0.0/30"}}));
    status(&mut t.b, &c).unwrap(); // no network yet: nothing exhausted
    add(
        &mut t.b,
        &c,
        &env(Command::Add, "only", &mk(&t.k, &t.dir, "only"), "eth0"),
    )
    .unwrap();
    assert_eq!(status(&mut t.b, &c).unwrap_err().code, code::NO_IPS);
    let err = add(
        &mut t.b,
        &c,
        &env(Command::Add, "more", &mk(&t.k, &t.dir, "more"), "eth0"),
    )
    .unwrap_err();
    assert_eq!(err.code, code::NETD_REFUSED);
    del(&mut t.b, &c, &env(Command::Del, "only", "", "eth0")).unwrap();
    status(&mut t.b, &c).unwrap();
    let old = conf(json!({"cniVersion": "0.4.0", "ipam": {"subnet": "10.66.0.0/30"}}));
    assert_eq!(
        status(&mut t.b, &old).unwrap_err().code,
        code::INCOMPATIBLE_VERSION
    );
}

#[test]
fn reserved_names_map_and_sandbox_names_are_stable() {
    assert_eq!(netd_network("bridge"), "cni-bridge");
    assert_eq!(netd_network("podman"), "podman");
    assert_eq!(sandbox_name("abc"), sandbox_name("abc"));
    assert_ne!(sandbox_name("abc"), sandbox_name("abd"));
    assert!(netd::model::validate_name(&sandbox_name(&"x".repeat(200))).is_ok());
}
