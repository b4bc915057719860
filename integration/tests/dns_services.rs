//! Services made with `netctl service`, seen from inside real sandboxes with dig: an
//! ExternalName is a CNAME under `<name>.<namespace>.svc.cluster.local`, chased through
//! netd's forwarder to a fake upstream (dnsmasq in a namespace of our own) or through
//! netd's own names; bad input is refused and changes nothing; services survive a
//! restart; `rm` takes the name away before it returns.

mod dns_support;

use dns_support::{dig, dnsmasq, no_dig};
use integration::harness::{Host, Outside};
use serde_json::{json, Value};

fn services(h: &Host) -> Value {
    serde_json::from_str(&h.ctl(&["service", "ls", "--json"])).expect("service ls --json")
}

#[test]
fn ndds_external_name_service_is_a_cname_forwarded_persisted_and_removed() {
    if no_dig() {
        return;
    }
    let mut h = Host::bare();
    let up = Outside::new(&h, 67);
    let cfg = h.base.join("netd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[dns]\nupstreams = [\"{}\"]\ntimeout_ms = 300\nattempts = 2\n",
            up.ip
        ),
    )
    .expect("write config");
    h.daemon_args = vec!["--config".into(), cfg.display().to_string()];
    h.start();
    let Some(_fake) = dnsmasq(&up, &[]) else {
        return;
    };
    h.ctl(&["network", "create", "k", "--subnet", "10.67.1.0/24"]);
    for sb in ["ui", "cart"] {
        h.ctl(&[
            "sandbox",
            "create",
            sb,
            "--network",
            "k",
            "--label",
            "netd.namespace=shop",
        ]);
    }
    h.ctl(&["sandbox", "create", "plain", "--network", "k"]);
    let cart = h.ip("cart", "k");

    // Before: the name is ours (cluster domain) and does not exist.
    assert_eq!(dig(&h, "ui", "mail.shop.svc.cluster.local A").0, "NXDOMAIN");

    // An ExternalName pointing outside: CNAME, then the upstream's answer for the target.
    let id = h.ctl(&[
        "service",
        "create",
        "--namespace",
        "shop",
        "--external-name",
        "SMTP.example.test.",
        "mail",
    ]);
    assert_eq!(id.trim().len(), 32, "prints the id: {id}");
    let (st, ans) = dig(&h, "ui", "mail.shop.svc.cluster.local A");
    assert_eq!(st, "NOERROR", "{ans:?}");
    assert!(
        ans.iter().any(|l| l.contains("CNAME smtp.example.test.")),
        "{ans:?}"
    );
    assert!(ans.iter().any(|l| l.ends_with("A 192.0.2.7")), "{ans:?}");
    let (st, ans) = dig(&h, "ui", "MAIL.shop.svc.cluster.local CNAME");
    assert_eq!(st, "NOERROR");
    assert_eq!(ans.len(), 1, "{ans:?}");
    assert!(ans[0].ends_with("CNAME smtp.example.test."), "{ans:?}");
    // Cluster-wide, as in Kubernetes: a sandbox in no namespace resolves it too.
    assert!(dig(&h, "plain", "mail.shop.svc.cluster.local A")
        .1
        .iter()
        .any(|l| l.ends_with("A 192.0.2.7")));

    // An ExternalName pointing at one of netd's own names: chased locally. Default
    // namespace when none is given, and --json prints the object.
    let v: Value = serde_json::from_str(&h.ctl(&[
        "service",
        "create",
        "--json",
        "--external-name",
        "cart.shop.svc.cluster.local",
        "shop-cart",
    ]))
    .expect("service create --json");
    assert_eq!(v["kind"], "external_name");
    assert_eq!(v["namespace"], "default");
    assert_eq!(v["target"], "cart.shop.svc.cluster.local");
    let (st, ans) = dig(&h, "ui", "shop-cart.default.svc.cluster.local A");
    assert_eq!(st, "NOERROR");
    assert!(
        ans.iter()
            .any(|l| l.contains("CNAME cart.shop.svc.cluster.local.")),
        "{ans:?}"
    );
    assert!(ans.iter().any(|l| l.ends_with(&format!("A {cart}"))), "{ans:?}");

    // ls / inspect.
    let all = services(&h);
    let keys: Vec<String> = all
        .as_array()
        .expect("array")
        .iter()
        .map(|s| {
            format!(
                "{}/{}",
                s["namespace"].as_str().unwrap(),
                s["name"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(keys, ["default/shop-cart", "shop/mail"]);
    let table = h.ctl(&["service", "ls"]);
    assert!(
        table.lines().any(|l| l.starts_with("mail ")
            && l.contains("shop")
            && l.contains("external_name")
            && l.ends_with("smtp.example.test")),
        "{table}"
    );
    let q = h.ctl(&["service", "ls", "-q"]);
    assert_eq!(q.lines().collect::<Vec<_>>(), ["shop-cart", "mail"]);
    let insp: Value =
        serde_json::from_str(&h.ctl(&["service", "inspect", "-n", "shop", "mail"])).expect("inspect");
    assert_eq!(insp[0]["target"], "smtp.example.test");

    // Bad input: exit != 0, one line naming the problem, nothing changed.
    for (args, want) in [
        (
            vec!["create", "--external-name", "x.example.test", "Mail"],
            "invalid service name",
        ),
        (
            vec!["create", "--external-name", "10.0.0.1", "ip"],
            "not an IP address",
        ),
        (
            vec!["create", "--external-name", "a..b", "dots"],
            "invalid external name",
        ),
        (vec!["create", "nothing"], "needs a target"),
        (
            vec!["create", "-n", "Bad_NS", "--external-name", "x.y", "x"],
            "invalid namespace",
        ),
        (
            vec!["create", "-n", "shop", "--external-name", "x.y", "mail"],
            "already exists",
        ),
        (
            vec!["create", "-n", "shop", "--external-name", "x.y", "cart"],
            "sandbox cart already answers",
        ),
        (vec!["rm", "-n", "shop", "nope"], "no such service"),
        (vec!["inspect", "nope"], "no such service"),
    ] {
        let mut a = vec!["service"];
        a.extend(args.iter().copied());
        let o = h.netctl(&a);
        assert!(!o.ok(), "{a:?} succeeded: {}", o.stdout);
        assert_eq!(o.stderr.trim().lines().count(), 1, "{a:?}: {}", o.stderr);
        assert!(o.stderr.contains(want), "{a:?}: {}", o.stderr);
    }
    assert_eq!(services(&h), all, "bad input changed nothing");
    // The sandbox clash left cart's own name alone.
    assert!(dig(&h, "ui", "cart.shop.svc.cluster.local A").1[0].ends_with(&format!("A {cart}")));
    // The API: 400 for an unknown kind or field, 404 for a missing one.
    let c = h.client();
    let (code, body) = c
        .raw("POST", "/v1/services", Some(br#"{"name":"v","kind":"vip"}"#))
        .expect("api");
    assert_eq!(code, 400, "{body}");
    assert!(body["message"].as_str().unwrap().contains("unknown service kind"));
    let (code, _) = c
        .raw(
            "POST",
            "/v1/services",
            Some(br#"{"name":"v","externalName":"x.y"}"#),
        )
        .expect("api");
    assert_eq!(code, 400);
    let (code, _) = c.raw("GET", "/v1/services/shop/nope", None).expect("api");
    assert_eq!(code, 404);
    assert_eq!(services(&h), all);

    // kill -9 and restart: the services come back from the store and answer.
    h.restart();
    assert_eq!(services(&h), all);
    assert!(dig(&h, "ui", "mail.shop.svc.cluster.local A")
        .1
        .iter()
        .any(|l| l.ends_with("A 192.0.2.7")));

    // rm: gone before the call returns; the other one stays.
    assert_eq!(h.ctl(&["service", "rm", "-n", "shop", "mail"]).trim(), "mail");
    assert_eq!(dig(&h, "ui", "mail.shop.svc.cluster.local A").0, "NXDOMAIN");
    assert_eq!(
        dig(&h, "ui", "shop-cart.default.svc.cluster.local A").0,
        "NOERROR"
    );
    let left = c.get("/v1/services").expect("list");
    assert_eq!(left.as_array().map(Vec::len), Some(1));
    assert_eq!(
        c.post(
            "/v1/services",
            &json!({"name": "mail", "namespace": "shop", "external_name": "smtp.example.test"})
        )
        .expect("re-create via the API")["target"],
        "smtp.example.test"
    );
}
