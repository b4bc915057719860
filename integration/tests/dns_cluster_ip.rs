//! DNS names of load-balanced (`cluster_ip`) services, asked with dig from inside real
//! sandboxes: `NAME` and `NAME.NS.svc.cluster.local` give the VIP of the asker's network
//! only, `tasks.NAME` the backends it reaches, dnsrr the backends in round-robin order;
//! SRV; NODATA vs NXDOMAIN; backends follow sandbox operations before they return; a
//! name a sandbox holds is refused at create and changes nothing; `rm` takes the names
//! away. The name table alone is unit-tested in `netd/src/dns/services_tests.rs`.

mod dns_support;

use std::collections::BTreeSet;

use dns_support::{dig, no_dig};
use integration::harness::Host;
use serde_json::Value;

/// A host whose forwarder gives up fast (nothing answers upstream here), so a resolver
/// trying `web.shop` as-is before its search domains does not wait seconds.
fn host() -> Host {
    let mut h = Host::bare();
    let cfg = h.base.join("netd.toml");
    std::fs::write(
        &cfg,
        "[dns]\nupstreams = [\"192.0.2.1\"]\ntimeout_ms = 100\nattempts = 1\n",
    )
    .expect("write config");
    h.daemon_args = vec!["--config".into(), cfg.display().to_string()];
    h.start();
    h
}

/// The service's VIP on `network`, from the API.
fn vip(h: &Host, ns: &str, name: &str, network: &str) -> String {
    let v = h
        .client()
        .get(&format!("/v1/services/{ns}/{name}"))
        .expect("inspect");
    v["vips"][network]
        .as_str()
        .unwrap_or_else(|| panic!("{ns}/{name} has no VIP on {network}: {v}"))
        .to_string()
}

/// The addresses of an A/AAAA answer, in answer order.
fn addrs(answers: &[String]) -> Vec<String> {
    answers
        .iter()
        .filter(|l| l.contains(" IN A ") || l.contains(" IN AAAA "))
        .filter_map(|l| l.rsplit(' ').next().map(str::to_string))
        .collect()
}

fn set(v: Vec<String>) -> BTreeSet<String> {
    v.into_iter().collect()
}

fn strs(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// (status, addresses) of `dig NAME TYPE` from `sandbox`.
fn ask(h: &Host, sandbox: &str, q: &str) -> (String, Vec<String>) {
    let (st, ans) = dig(h, sandbox, q);
    (st, addrs(&ans))
}

/// `getent ahostsv4 NAME` through glibc with the sandbox's own resolv.conf (search
/// domains and all), as `ip netns exec` would mount it: the addresses found.
fn getent(h: &Host, sandbox: &str, name: &str) -> BTreeSet<String> {
    let rc = h.base.join("etc").join(sandbox).join("resolv.conf");
    let o = h.sh_in(
        sandbox,
        &format!(
            "unshare -m bash -c 'mount --bind {} /etc/resolv.conf && getent ahostsv4 {name}'",
            rc.display()
        ),
    );
    o.stdout
        .lines()
        .filter_map(|l| l.split_whitespace().next().map(str::to_string))
        .collect()
}

#[test]
fn ndcip_vip_names_are_scoped_to_the_askers_network_and_follow_the_backends() {
    if no_dig() {
        return;
    }
    let h = host();
    h.ctl(&[
        "network",
        "create",
        "front",
        "--ipv6",
        "--subnet",
        "10.71.0.0/24",
        "--subnet",
        "fd00:71::/64",
    ]);
    h.ctl(&["network", "create", "back", "--subnet", "10.71.1.0/24"]);
    h.ctl(&["network", "create", "other", "--subnet", "10.71.2.0/24"]);
    h.ctl(&[
        "sandbox",
        "create",
        "web1",
        "--network",
        "front",
        "--label",
        "app=web",
    ]);
    h.ctl(&[
        "sandbox",
        "create",
        "web2",
        "--network",
        "front",
        "--network",
        "back",
        "--label",
        "app=web",
    ]);
    // Clients: on front (in namespace shop, so it has search domains), on back, on a
    // network the service is not on.
    h.ctl(&[
        "sandbox",
        "create",
        "cf",
        "--network",
        "front",
        "--label",
        "netd.namespace=shop",
    ]);
    h.ctl(&["sandbox", "create", "cb", "--network", "back"]);
    h.ctl(&["sandbox", "create", "co", "--network", "other"]);
    let k = "web.shop.svc.cluster.local";

    // Not there yet: NXDOMAIN (a single label and the cluster domain are netd's).
    assert_eq!(ask(&h, "cf", "web A").0, "NXDOMAIN");
    assert_eq!(ask(&h, "cf", &format!("{k} A")).0, "NXDOMAIN");

    h.ctl(&[
        "service",
        "create",
        "web",
        "--namespace",
        "shop",
        "--network",
        "front",
        "--network",
        "back",
        "--selector",
        "app=web",
        "--port",
        "80:8080",
    ]);
    let vf = vip(&h, "shop", "web", "front");
    let vb = vip(&h, "shop", "web", "back");
    assert_ne!(vf, vb);

    // NAME and the Kubernetes name: the VIP of the asker's network, and only that one.
    for name in ["web", k, "WEB."] {
        assert_eq!(
            ask(&h, "cf", &format!("{name} A")),
            ("NOERROR".into(), vec![vf.clone()]),
            "{name}"
        );
        assert_eq!(
            ask(&h, "cb", &format!("{name} A")),
            ("NOERROR".into(), vec![vb.clone()]),
            "{name}"
        );
        assert_eq!(ask(&h, "co", &format!("{name} A")).0, "NXDOMAIN", "{name}");
        // The VIP is IPv4: AAAA is NODATA (the name exists), not NXDOMAIN.
        assert_eq!(
            ask(&h, "cf", &format!("{name} AAAA")),
            ("NOERROR".into(), vec![]),
            "{name}"
        );
    }
    // `netctl dns ls` shows what each sandbox sees: the VIP of its own network only.
    let ls: Value = serde_json::from_str(&h.ctl(&["dns", "ls", "cb", "--json"])).expect("dns ls");
    let rows: Vec<(String, String, String)> = ls
        .as_array()
        .expect("array")
        .iter()
        .filter(|r| r["name"] == "web")
        .map(|r| {
            let s = |k: &str| r[k].as_str().unwrap_or_default().to_string();
            (s("type"), s("value"), s("network"))
        })
        .collect();
    assert_eq!(rows, [("A".to_string(), vb.clone(), "back".to_string())]);
    // NAME.NS through the sandbox's search domains, with glibc's own resolver.
    assert_eq!(getent(&h, "cf", "web.shop"), strs(&[&vf]));
    assert_eq!(getent(&h, "cf", "web"), strs(&[&vf]));

    // tasks.NAME: the backends the asker reaches, A and AAAA.
    let (w1, w2f, w2b) = (h.ip("web1", "front"), h.ip("web2", "front"), h.ip("web2", "back"));
    let (st, a) = ask(&h, "cf", "tasks.web A");
    assert_eq!(st, "NOERROR");
    assert_eq!(set(a), strs(&[&w1, &w2f]));
    assert_eq!(
        set(ask(&h, "cf", "tasks.web AAAA").1),
        strs(&[&h.ip6("web1", "front"), &h.ip6("web2", "front")])
    );
    assert_eq!(ask(&h, "cb", "tasks.web A").1, [w2b]);
    assert_eq!(ask(&h, "co", "tasks.web A").0, "NXDOMAIN");

    // SRV by port number: the service port, target the service name, and its VIP for
    // this asker in the additional section.
    let o = h.sh_in(
        "cb",
        &format!("dig @127.0.0.11 +time=3 +tries=1 +noall +answer +additional SRV _80._tcp.{k}"),
    );
    let lines: Vec<String> = o
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(
        lines.iter().any(|l| l.ends_with(&format!("SRV 0 0 80 {k}."))),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.ends_with(&format!("A {vb}"))), "{lines:?}");
    assert_eq!(ask(&h, "cb", &format!("_8080._tcp.{k} SRV")).0, "NXDOMAIN");

    // Backends follow the sandboxes before each call returns.
    h.ctl(&[
        "sandbox",
        "create",
        "web3",
        "--network",
        "front",
        "--label",
        "app=web",
    ]);
    let w3 = h.ip("web3", "front");
    assert_eq!(set(ask(&h, "cf", "tasks.web A").1), strs(&[&w1, &w2f, &w3]));
    h.ctl(&["sandbox", "rm", "web3"]);
    assert_eq!(set(ask(&h, "cf", "tasks.web A").1), strs(&[&w1, &w2f]));
    h.ctl(&["network", "disconnect", "back", "web2"]);
    // No backend left on back: the name is still there, with no address (NODATA).
    assert_eq!(ask(&h, "cb", "tasks.web A"), ("NOERROR".into(), vec![]));
    assert_eq!(ask(&h, "cb", "web A"), ("NOERROR".into(), vec![vb.clone()]));
    h.ctl(&["network", "connect", "back", "web2"]);
    assert_eq!(ask(&h, "cb", "tasks.web A").1, [h.ip("web2", "back")]);

    // A name a sandbox already answers under on one of the networks: refused, one
    // line, nothing stored, the sandbox keeps its name.
    let before: Value = serde_json::from_str(&h.ctl(&["service", "ls", "--json"])).expect("ls");
    let snap = h.snapshot();
    let o = h.netctl(&["service", "create", "cb", "--network", "back", "--port", "80"]);
    assert!(!o.ok(), "a service named like sandbox cb was created");
    let err = o.stderr.trim();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("sandbox cb already answers as cb on network back"),
        "{err}"
    );
    let after: Value = serde_json::from_str(&h.ctl(&["service", "ls", "--json"])).expect("ls");
    assert_eq!(before, after);
    assert_eq!(snap, h.snapshot());
    assert_eq!(
        ask(&h, "cf", "cb A").0,
        "NXDOMAIN",
        "cb shares no network with cf"
    );
    assert_eq!(ask(&h, "web2", "cb A").1, [h.ip("cb", "back")]);

    // rm takes every name away before it returns: NXDOMAIN for the names under netd's
    // own (a single label, the cluster domain); `tasks.web` is nobody's name any more,
    // so it goes upstream (here none answers: SERVFAIL).
    h.ctl(&["service", "rm", "-n", "shop", "web"]);
    for name in ["web", k] {
        assert_eq!(ask(&h, "cf", &format!("{name} A")).0, "NXDOMAIN", "{name}");
    }
    let (st, a) = ask(&h, "cf", "tasks.web A");
    assert!(st != "NOERROR" && a.is_empty(), "{st} {a:?}");
}

#[test]
fn ndcip_dnsrr_answers_every_backend_in_round_robin_order() {
    if no_dig() {
        return;
    }
    let h = host();
    h.ctl(&["network", "create", "n", "--subnet", "10.72.0.0/24"]);
    h.ctl(&["network", "create", "m", "--subnet", "10.72.1.0/24"]);
    for i in 1..=3 {
        h.ctl(&[
            "sandbox",
            "create",
            &format!("db{i}"),
            "--network",
            "n",
            "--label",
            "app=db",
        ]);
    }
    h.ctl(&["sandbox", "create", "client", "--network", "n"]);
    h.ctl(&["sandbox", "create", "far", "--network", "m"]);
    h.ctl(&[
        "service",
        "create",
        "db",
        "--network",
        "n",
        "--endpoint-mode",
        "dnsrr",
        "--selector",
        "app=db",
        "--port",
        "5432",
    ]);
    let all = strs(&[&h.ip("db1", "n"), &h.ip("db2", "n"), &h.ip("db3", "n")]);
    let k = "db.default.svc.cluster.local";
    for name in ["db", k, "tasks.db"] {
        // Every answer has every backend; each starts one further than the one before.
        let mut prev = ask(&h, "client", &format!("{name} A")).1;
        assert_eq!(set(prev.clone()), all, "{name}");
        let mut firsts = BTreeSet::new();
        for _ in 0..6 {
            let next = ask(&h, "client", &format!("{name} A")).1;
            let mut want = prev.clone();
            want.rotate_left(1);
            assert_eq!(next, want, "{name}: not the next rotation of {prev:?}");
            firsts.insert(next[0].clone());
            prev = next;
        }
        assert_eq!(firsts, all, "{name}: each backend comes first in turn");
        assert_eq!(ask(&h, "far", &format!("{name} A")).0, "NXDOMAIN", "{name}");
    }
    // Each backend by name under the Kubernetes name; SRV per backend to those names,
    // with the port the backends listen on.
    assert_eq!(ask(&h, "client", &format!("db2.{k} A")).1, [h.ip("db2", "n")]);
    let (st, ans) = dig(&h, "client", &format!("_5432._tcp.{k} SRV"));
    assert_eq!(st, "NOERROR");
    let targets: BTreeSet<String> = ans
        .iter()
        .filter_map(|l| l.split(" SRV 0 0 5432 ").nth(1).map(str::to_string))
        .collect();
    assert_eq!(
        targets,
        strs(&[&format!("db1.{k}."), &format!("db2.{k}."), &format!("db3.{k}.")])
    );

    // The last backend gone: NODATA, and the name comes back with a new one.
    for i in 1..=3 {
        h.ctl(&["sandbox", "rm", &format!("db{i}")]);
    }
    assert_eq!(ask(&h, "client", "db A"), ("NOERROR".into(), vec![]));
    h.ctl(&["sandbox", "create", "db4", "--network", "n", "--label", "app=db"]);
    assert_eq!(ask(&h, "client", "db A").1, [h.ip("db4", "n")]);
}
