//! Bad input: every refused request says why (CLI: exit != 0 and one line; API: 4xx with
//! a JSON message) and leaves the store, the kernel and the firewall exactly as they were.

use integration::harness::Host;
use integration::skip::no_root;

#[test]
fn refused_requests_change_nothing() {
    if no_root() {
        return;
    }
    let h = Host::new();
    h.ctl(&["network", "create", "a", "--subnet", "10.80.0.0/24"]);
    h.ctl(&["network", "create", "tiny", "--subnet", "10.82.0.0/30"]);
    h.ctl(&["sandbox", "create", "s1", "--network", "a", "-p", "8080:80"]);
    h.ctl(&["sandbox", "create", "t1", "--network", "tiny"]);
    // A /24 whose allocatable range is two addresses, both taken.
    h.ctl(&[
        "network",
        "create",
        "rng",
        "--subnet",
        "10.86.0.0/24",
        "--ip-range",
        "10.86.0.4/31",
    ]);
    h.ctl(&["sandbox", "create", "r1", "--network", "rng"]);
    h.ctl(&["sandbox", "create", "r2", "--network", "rng"]);
    let before = h.snapshot();
    let cases: &[(&[&str], &str)] = &[
        (
            &["network", "create", "x", "--subnet", "10.1.0/33"],
            "invalid subnet",
        ),
        (
            &[
                "network",
                "create",
                "x",
                "--subnet",
                "10.83.0.0/24",
                "--gateway",
                "10.84.0.1",
            ],
            "outside subnet",
        ),
        (
            &["network", "create", "x", "--subnet", "10.80.0.0/16"],
            "overlaps",
        ),
        (&["network", "create", "a"], "already exists"),
        (&["network", "create", "bad name!"], "invalid characters"),
        (
            &[
                "network",
                "create",
                "x",
                "-o",
                "com.docker.network.bridge.bogus=1",
            ],
            "unknown bridge option",
        ),
        (&["network", "create", "x", "--mtu", "10"], "MTU"),
        (&["network", "rm", "a"], "active endpoints"),
        (&["network", "rm", "nope"], "no such network"),
        (&["network", "connect", "a", "nope"], "no such sandbox"),
        (&["network", "connect", "nope", "s1"], "no such network"),
        (&["network", "connect", "a", "s1"], "already connected"),
        (&["network", "disconnect", "tiny", "s1"], "not connected"),
        (
            &["sandbox", "create", "t2", "--network", "tiny"],
            "no free address",
        ),
        (
            &["sandbox", "create", "r3", "--network", "rng"],
            "no free address",
        ),
        (&["network", "connect", "rng", "s1"], "no free address"),
        (&["sandbox", "create", "s1", "--network", "a"], "already exists"),
        (
            &["sandbox", "create", "s2", "--network", "nope"],
            "no such network",
        ),
        (
            &["sandbox", "create", "s2", "--network", "a", "-p", "8080:80"],
            "already published",
        ),
        (
            &["sandbox", "create", "s2", "--network", "a", "-p", "70000:80"],
            "invalid port spec",
        ),
        (
            &["sandbox", "create", "s2", "--network", "a", "--ip", "10.99.0.5"],
            "not in subnet",
        ),
        (
            &["sandbox", "create", "s2", "--network", "a", "--ip", "10.80.0.1"],
            "gateway",
        ),
        (
            &[
                "sandbox",
                "create",
                "s2",
                "--network",
                "a",
                "--ip",
                &h.ip("s1", "a"),
            ],
            "in use",
        ),
        (
            &["sandbox", "create", "s2", "--network", "host", "--network", "a"],
            "cannot be combined",
        ),
        (&["sandbox", "rm", "nope"], "no such sandbox"),
    ];
    for (args, why) in cases {
        let o = h.netctl(args);
        assert_ne!(o.code, 0, "netctl {args:?} succeeded");
        let err = o.stderr.trim();
        assert_eq!(
            err.lines().count(),
            1,
            "netctl {args:?}: one line expected, got {err:?}"
        );
        assert!(
            err.starts_with("netctl: ") && err.contains(why),
            "netctl {args:?}: {err:?} lacks {why:?}"
        );
        assert_eq!(h.snapshot(), before, "netctl {args:?} changed state");
    }
    // The API itself: 4xx with a JSON message, nothing changed.
    let c = h.client();
    let big = vec![b'x'; 2 << 20];
    let raw: &[(&str, &str, Option<&[u8]>, u16)] = &[
        ("POST", "/v1/networks", Some(b"{not json"), 400),
        ("POST", "/v1/networks", None, 400),
        ("POST", "/v1/networks", Some(b"[1,2]"), 400),
        ("POST", "/v1/networks", Some(b"{\"name\": 5}"), 400),
        ("POST", "/v1/sandboxes", Some(&big), 413),
        (
            "POST",
            "/v1/networks/a/connect",
            Some(b"{\"sandbox\": \"s1\", \"bogus\": 1}"),
            400,
        ),
        (
            "POST",
            "/v1/networks",
            Some(br#"{"name": "y", "subnets": [{"subnet": "10.80.0.128/25"}]}"#),
            409,
        ),
        (
            "POST",
            "/v1/networks",
            Some(br#"{"name": "y", "subnets": [{"subnet": "10.300.0.0/24"}]}"#),
            400,
        ),
        (
            "POST",
            "/v1/sandboxes",
            Some(br#"{"name": "s1", "networks": [{"network": "a"}]}"#),
            409,
        ),
        (
            "POST",
            "/v1/networks/nope/connect",
            Some(br#"{"sandbox": "s1"}"#),
            404,
        ),
        ("DELETE", "/v1/networks/a", None, 409),
        ("DELETE", "/v1/sandboxes/nope", None, 404),
        ("POST", "/v1/sandboxes", Some(b""), 400),
        ("GET", "/v1/nothing", None, 404),
        ("DELETE", "/v1/networks", None, 405),
    ];
    for (m, p, b, want) in raw {
        let (code, v) = c.raw(m, p, *b).expect("request");
        assert_eq!(code, *want, "{m} {p}: {v}");
        assert!(
            v["message"].as_str().is_some_and(|s| !s.is_empty()),
            "{m} {p}: no message in {v}"
        );
        assert_eq!(h.snapshot(), before, "{m} {p} changed state");
    }
    h.assert_consistent();
}
