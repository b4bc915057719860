use proptest::prelude::*;
use serde_json::json;

use super::*;

/// The reference bridge plugin's documented example, type changed.
const BRIDGE_EXAMPLE: &str = r#"{
    "cniVersion": "1.0.0",
    "name": "mynet",
    "type": "netd-cni",
    "bridge": "mynet0",
    "isDefaultGateway": true,
    "isGateway": true,
    "forceAddress": false,
    "ipMasq": true,
    "hairpinMode": true,
    "promiscMode": false,
    "mtu": 1400,
    "ipam": {
        "type": "host-local",
        "subnet": "10.10.0.0/16",
        "rangeStart": "10.10.1.0",
        "rangeEnd": "10.10.1.255",
        "routes": [{ "dst": "0.0.0.0/0" }],
        "dataDir": "/var/lib/cni/networks"
    },
    "dns": { "nameservers": ["10.10.0.1"] }
}"#;

fn code_of(bytes: &[u8]) -> u32 {
    parse(bytes).unwrap_err().code
}

fn with(key: &str, v: Value) -> Vec<u8> {
    let mut c: Value = serde_json::from_str(BRIDGE_EXAMPLE).unwrap();
    c[key] = v;
    serde_json::to_vec(&c).unwrap()
}

#[test]
fn reference_bridge_config_parses() {
    let c = parse(BRIDGE_EXAMPLE.as_bytes()).unwrap();
    assert_eq!(c.name, "mynet");
    assert_eq!(c.bridge.as_deref(), Some("mynet0"));
    assert!(c.ip_masq && c.hairpin_mode == Some(true) && !c.promisc_mode);
    assert_eq!(c.mtu, Some(1400));
    let s = c.subnets().unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s[0].subnet.to_string(), "10.10.0.0/16");
    // netd ranges are CIDRs: 10.10.1.0-10.10.1.255 is exactly 10.10.1.0/24.
    assert_eq!(s[0].ip_range.unwrap().to_string(), "10.10.1.0/24");
    assert!(c.socket.is_none());
}

#[test]
fn every_supported_version_is_accepted_others_are_code_1() {
    for v in crate::version::SUPPORTED {
        assert_eq!(parse(&with("cniVersion", json!(v))).unwrap().cni_version, *v);
    }
    for v in ["0.1.0", "0.2.0", "2.0.0", "1.1", "latest"] {
        assert_eq!(
            code_of(&with("cniVersion", json!(v))),
            code::INCOMPATIBLE_VERSION,
            "{v}"
        );
    }
    assert_eq!(
        code_of(br#"{"name":"x","type":"netd-cni"}"#),
        code::INVALID_CONFIG
    );
}

#[test]
fn errors_get_the_spec_codes() {
    assert_eq!(code_of(b"{not json"), code::DECODE);
    assert_eq!(code_of(b""), code::DECODE);
    assert_eq!(code_of(b"[1,2]"), code::DECODE);
    assert_eq!(code_of(&with("mtu", json!("big"))), code::INVALID_CONFIG);
    assert_eq!(code_of(&with("mtu", json!(20))), code::INVALID_CONFIG);
    assert_eq!(code_of(&with("name", json!(""))), code::INVALID_CONFIG);
    assert_eq!(code_of(&with("name", json!("bad/name"))), code::INVALID_CONFIG);
    assert_eq!(
        code_of(&with("bridge", json!("a-very-long-bridge-name"))),
        code::INVALID_CONFIG
    );
    assert_eq!(code_of(&with("ipMasq", json!("yes"))), code::INVALID_CONFIG);
    assert!(parse(&with("vlan", json!(10))).is_ok());
    assert!(parse(&with("vlanTrunk", json!([{"id": 5}]))).is_ok());
    // overlay: only through a daemon (the test config is standalone).
    assert_eq!(
        code_of(&with("driver", json!("overlay"))),
        code::UNSUPPORTED_FIELD
    );
    assert_eq!(
        code_of(&with("driver", json!("ovrelay"))),
        code::UNSUPPORTED_FIELD
    );
    // isGateway false: the bridge holds no gateway address (both families inhibited);
    // isDefaultGateway true implies isGateway, as in the reference.
    let opts = |c: &[u8]| {
        crate::ops::network_request(&parse(c).expect("parse"))
            .expect("request")
            .options
    };
    let mut no_gw: Value = serde_json::from_slice(&with("isGateway", json!(false))).unwrap();
    no_gw["isDefaultGateway"] = json!(false);
    let o = opts(&serde_json::to_vec(&no_gw).unwrap());
    assert_eq!(
        o.get(netd::model::OPT_INHIBIT_IPV4).map(String::as_str),
        Some("true")
    );
    assert_eq!(
        o.get(netd::model::OPT_INHIBIT_IPV6).map(String::as_str),
        Some("true")
    );
    // The gateway's default route: as the reference with isDefaultGateway or isGateway
    // false; netd's rule (the first network carries it) when neither is said.
    let no_default = |c: &[u8]| parse(c).expect("parse").no_default_route();
    assert!(no_default(&serde_json::to_vec(&no_gw).unwrap()));
    assert!(no_default(&with("isDefaultGateway", json!(false))));
    assert!(!no_default(&with("isDefaultGateway", json!(true))));
    let mut plain: Value = serde_json::from_slice(&with("isGateway", json!(true))).unwrap();
    plain.as_object_mut().unwrap().remove("isDefaultGateway");
    assert!(!no_default(&serde_json::to_vec(&plain).unwrap()));
    plain["isGateway"] = json!(false);
    assert!(no_default(&serde_json::to_vec(&plain).unwrap()));
    // promiscMode: the bridge promiscuous (without hairpin); not with hairpinMode (the
    // reference refuses the two together), nor on a VLAN network.
    let mut pm: Value = serde_json::from_slice(&with("promiscMode", json!(true))).unwrap();
    pm["hairpinMode"] = json!(false);
    assert_eq!(
        opts(&serde_json::to_vec(&pm).unwrap())
            .get(netd::model::OPT_PROMISC)
            .map(String::as_str),
        Some("true")
    );
    assert!(!opts(&with("promiscMode", json!(false))).contains_key(netd::model::OPT_PROMISC));
    let mut both: Value = serde_json::from_slice(&with("promiscMode", json!(true))).unwrap();
    both["hairpinMode"] = json!(true);
    assert_eq!(code_of(&serde_json::to_vec(&both).unwrap()), code::INVALID_CONFIG);
    both["hairpinMode"] = json!(false);
    both["vlan"] = json!(7);
    assert_eq!(code_of(&serde_json::to_vec(&both).unwrap()), code::INVALID_CONFIG);
    // hairpinMode: false turns hairpin off (netd's ports have it on without the key);
    // true or absent leave netd's default; under promiscMode hairpin is off anyway.
    assert_eq!(
        opts(&with("hairpinMode", json!(false)))
            .get(netd::model::OPT_HAIRPIN)
            .map(String::as_str),
        Some("false")
    );
    assert!(!opts(&with("hairpinMode", json!(true))).contains_key(netd::model::OPT_HAIRPIN));
    let mut absent: Value = serde_json::from_str(BRIDGE_EXAMPLE).unwrap();
    absent.as_object_mut().unwrap().remove("hairpinMode");
    assert!(!opts(&serde_json::to_vec(&absent).unwrap()).contains_key(netd::model::OPT_HAIRPIN));
    assert!(!opts(&serde_json::to_vec(&pm).unwrap()).contains_key(netd::model::OPT_HAIRPIN));
    assert_eq!(code_of(&with("hairpinMode", json!("no"))), code::INVALID_CONFIG);
    // The example also says isDefaultGateway: true.
    assert!(!opts(&with("isGateway", json!(false))).contains_key(netd::model::OPT_INHIBIT_IPV4));
    assert!(!opts(&with("isGateway", json!(true))).contains_key(netd::model::OPT_INHIBIT_IPV4));
    // Other IPAM types are plugins executed from CNI_PATH (delegated_ipam); a type that
    // is not a plain file name is a config error.
    assert!(parse(&with("ipam", json!({"type": "dhcp"}))).is_ok());
    // host-local is executed too: its keys are its own business (and its error, with its
    // code, comes back from the exec), so netd-cni does not judge them.
    assert!(parse(&with(
        "ipam",
        json!({"type": "host-local", "subnet": "10.0.0.0/33"})
    ))
    .is_ok());
    assert_eq!(
        code_of(&with("ipam", json!({"type": "../../bin/sh"}))),
        code::INVALID_CONFIG
    );
    assert_eq!(
        code_of(&with("ipam", json!({"type": "netd", "subnet": "10.0.0.0/33"}))),
        code::INVALID_CONFIG
    );
    assert_eq!(
        code_of(&with(
            "ipam",
            json!({"type": "netd", "subnet": "10.0.0.0/24", "gateway": "10.9.0.1"})
        )),
        code::INVALID_CONFIG
    );
    assert_eq!(
        code_of(&with(
            "ipam",
            json!({"type": "netd", "subnet": "10.0.0.0/24", "rangeStart": "10.0.0.9", "rangeEnd": "10.0.0.3"})
        )),
        code::INVALID_CONFIG
    );
    assert_eq!(
        code_of(&with(
            "ipam",
            json!({"type": "netd", "ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]})
        )),
        code::UNSUPPORTED_FIELD
    );
    let big = vec![b' '; MAX_STDIN + 1];
    assert_eq!(code_of(&big), code::DECODE);
    let deep = "[".repeat(100_000);
    assert_eq!(code_of(deep.as_bytes()), code::DECODE);
}

#[test]
fn ranges_dual_stack_and_routes() {
    let c = parse(&with(
        "ipam",
        json!({"type": "netd",
               "ranges": [[{"subnet": "10.5.0.0/24", "gateway": "10.5.0.254"}], [{"subnet": "fd00:5::/64"}]],
               "routes": [{"dst": "0.0.0.0/0"}, {"dst": "::/0"}]}),
    ))
    .unwrap();
    let s = c.subnets().unwrap();
    assert_eq!(s.len(), 2);
    assert_eq!(s[0].gateway, Some("10.5.0.254".parse().unwrap()));
    assert!(s[1].subnet.is_ipv6());
    assert_eq!(
        code_of(&with(
            "ipam",
            json!({"type": "netd", "subnet": "10.0.0.0/24", "routes": [{"dst": "nope"}]})
        )),
        code::INVALID_CONFIG
    );
    let r = c.routes().unwrap();
    assert_eq!(r.len(), 2);
    assert_eq!((r[1].dst.to_string(), r[1].gw), ("::/0".into(), None));
    for bad in [
        json!([{"dst": "10.1.2.3/16"}]),
        json!([{"dst": "10.1.0.0/16", "gw": "fd00::1"}]),
        json!([{"dst": "10.1.0.0/16", "gw": "x"}]),
    ] {
        let conf = with(
            "ipam",
            json!({"type": "netd", "subnet": "10.0.0.0/24", "routes": bad}),
        );
        assert_eq!(code_of(&conf), code::INVALID_CONFIG, "{bad}");
    }
}

#[test]
fn capabilities_ips_mac_and_port_mappings() {
    let mut c: Value = serde_json::from_str(BRIDGE_EXAMPLE).unwrap();
    c["runtimeConfig"] = json!({
        "ips": ["10.10.1.7/16"],
        "mac": "02:00:00:00:00:07",
        "portMappings": [
            {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"},
            {"hostPort": 5353, "containerPort": 53, "protocol": "udp", "hostIP": "127.0.0.1"}
        ]
    });
    c["args"] = json!({"cni": {"ips": ["10.10.1.8"], "mac": "02:00:00:00:00:08"}});
    let conf = parse(&serde_json::to_vec(&c).unwrap()).unwrap();
    // runtimeConfig beats args beats CNI_ARGS.
    assert_eq!(
        conf.requested_ips(&["10.10.1.9".into()]).unwrap(),
        vec!["10.10.1.7".parse::<IpAddr>().unwrap()]
    );
    assert_eq!(
        conf.requested_mac(Some("02:00:00:00:00:09")).as_deref(),
        Some("02:00:00:00:00:07")
    );
    assert_eq!(
        conf.port_specs().unwrap(),
        vec!["8080:80/tcp", "127.0.0.1:5353:53/udp"]
    );

    c["runtimeConfig"] = json!({});
    let conf = parse(&serde_json::to_vec(&c).unwrap()).unwrap();
    assert_eq!(
        conf.requested_ips(&[]).unwrap(),
        vec!["10.10.1.8".parse::<IpAddr>().unwrap()]
    );
    c["args"] = json!({});
    let conf = parse(&serde_json::to_vec(&c).unwrap()).unwrap();
    assert_eq!(
        conf.requested_ips(&["10.10.1.9".into()]).unwrap(),
        vec!["10.10.1.9".parse::<IpAddr>().unwrap()]
    );

    c["runtimeConfig"] = json!({"portMappings": [{"hostPort": 1, "containerPort": 2, "protocol": "sctp"}]});
    assert_eq!(code_of(&serde_json::to_vec(&c).unwrap()), code::UNSUPPORTED_FIELD);
    c["runtimeConfig"] = json!({"ips": ["10.0.0.1", "10.0.0.2"]});
    assert_eq!(code_of(&serde_json::to_vec(&c).unwrap()), code::UNSUPPORTED_FIELD);
    c["runtimeConfig"] = json!({"ips": ["ten"]});
    assert_eq!(code_of(&serde_json::to_vec(&c).unwrap()), code::INVALID_CONFIG);
    c["runtimeConfig"] = json!({"mac": "zz"});
    assert_eq!(code_of(&serde_json::to_vec(&c).unwrap()), code::INVALID_CONFIG);
}

#[test]
fn valid_attachments_for_gc() {
    let c = parse(&with(
        "cni.dev/valid-attachments",
        json!([{"containerID": "a", "ifname": "eth0"}]),
    ))
    .unwrap();
    assert_eq!(c.valid_attachments[0].container_id, "a");
    assert_eq!(
        code_of(&with("cni.dev/valid-attachments", json!("x"))),
        code::INVALID_CONFIG
    );
}

const OK_CODES: &[u32] = &[
    code::INCOMPATIBLE_VERSION,
    code::UNSUPPORTED_FIELD,
    code::DECODE,
    code::INVALID_CONFIG,
];

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| serde_json::Number::from_f64(f)
            .map(Value::Number)
            .unwrap_or(Value::Null)),
        "[ -~]{0,20}".prop_map(Value::from),
        prop_oneof![
            Just("10.1.0.0/24"),
            Just("fd00::/64"),
            Just("1.1.0"),
            Just("0.3.1"),
            Just("eth0"),
            Just("10.1.0.300")
        ]
        .prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,10}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

const KEYS: &[&str] = &[
    "cniVersion",
    "name",
    "type",
    "socket",
    "stateDir",
    "driver",
    "bridge",
    "isGateway",
    "isDefaultGateway",
    "ipMasq",
    "mtu",
    "hairpinMode",
    "promiscMode",
    "vlan",
    "vlanTrunk",
    "preserveDefaultVlan",
    "ipam",
    "dns",
    "runtimeConfig",
    "args",
    "prevResult",
    "cni.dev/valid-attachments",
    "ipv6",
];

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any bytes: a config or one of the config error codes, never a panic.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        if let Err(e) = parse(&bytes) {
            prop_assert!(OK_CODES.contains(&e.code), "code {} for {:?}", e.code, e.msg);
        }
    }

    /// A valid config with one key replaced by an arbitrary JSON value (wrong types,
    /// nested garbage, missing pieces inside ipam).
    #[test]
    fn mutated_config_gets_a_config_code(key in prop::sample::select(KEYS), v in json_value()) {
        let bytes = with(key, v);
        if let Err(e) = parse(&bytes) {
            prop_assert!(OK_CODES.contains(&e.code), "code {} for {:?}", e.code, e.msg);
        }
    }

    /// Arbitrary ipam sections.
    #[test]
    fn mutated_ipam(key in prop::sample::select(&["type", "subnet", "rangeStart", "rangeEnd", "gateway", "ranges", "routes"][..]), v in json_value()) {
        let mut c: Value = serde_json::from_str(BRIDGE_EXAMPLE).unwrap();
        c["ipam"][key] = v;
        if let Err(e) = parse(&serde_json::to_vec(&c).unwrap()) {
            prop_assert!(OK_CODES.contains(&e.code), "code {} for {:?}", e.code, e.msg);
        }
    }

    /// The whole invocation (env + stdin) for VERSION/GC/STATUS-free paths: any
    /// environment strings give a JSON error with a spec code, never a panic.
    #[test]
    fn arbitrary_env_never_panics(cmd in "[A-Z]{0,7}", cid in "[ -~]{0,12}", ifname in "[ -~]{0,18}", args in "[ -~]{0,30}") {
        let env = move |k: &str| -> Option<String> {
            match k {
                "CNI_COMMAND" => Some(cmd.clone()),
                "CNI_CONTAINERID" => Some(cid.clone()),
                "CNI_IFNAME" => Some(ifname.clone()),
                "CNI_ARGS" => Some(args.clone()),
                "CNI_NETNS" => Some("/nonexistent/netns".into()),
                "CNI_PATH" => Some("/nonexistent".into()),
                _ => None,
            }
        };
        // Delegating to a socket nobody serves: no side effects possible.
        let out = crate::run::run(env, br#"{"cniVersion":"1.1.0","name":"n","type":"netd-cni","socket":"/nonexistent/netd.sock"}"#);
        if out.code != 0 {
            let v = out.stdout.unwrap();
            prop_assert!(v["code"].as_u64().is_some_and(|c| c > 0), "{v}");
            prop_assert!(v["msg"].is_string());
        }
    }
}

/// The conflist `make install-cni` puts in /etc/cni/net.d parses as libcni hands its
/// plugin over (the list's cniVersion and name merged in).
#[test]
fn shipped_example_conflist_parses() {
    let list: Value = serde_json::from_str(include_str!("../../examples/10-netd.conflist")).unwrap();
    let mut plugin = list["plugins"][0].clone();
    plugin["cniVersion"] = list["cniVersion"].clone();
    plugin["name"] = list["name"].clone();
    let c = parse(&serde_json::to_vec(&plugin).unwrap()).unwrap();
    assert_eq!(c.plugin_type, "netd-cni");
    assert!(c.socket.is_none() && c.state_dir.is_some());
    assert_eq!(c.subnets().unwrap()[0].subnet.to_string(), "10.85.0.0/16");
}

/// The reference macvlan plugin's documented keys, type changed, `driver` added.
#[test]
fn macvlan_conf_like_the_reference_plugin() {
    let c = parse(
        br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "macvlan",
            "master": "eth0", "mode": "vepa", "mtu": 1400,
            "ipam": {"type": "host-local", "subnet": "192.168.1.0/24", "gateway": "192.168.1.1"}}"#,
    )
    .unwrap();
    assert!(c.is_macvlan());
    let req = crate::ops::network_request(&c).unwrap();
    assert_eq!(req.driver.as_deref(), Some("macvlan"));
    assert_eq!(req.options.get("parent").map(String::as_str), Some("eth0"));
    assert_eq!(req.options.get("macvlan_mode").map(String::as_str), Some("vepa"));
    assert!(req.parse().is_ok());
    let base = |extra: &str| {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "macvlan", {extra}
                "ipam": {{"type": "host-local", "subnet": "192.168.1.0/24"}}}}"#
        )
    };
    // No master parses (the default route's interface is looked up at ADD); a bad
    // master name, a bad mode, bridge keys, port mappings, macvlan keys without the driver
    // do not.
    assert_eq!(parse(base("").as_bytes()).unwrap().master, None);
    assert_eq!(code_of(base(r#""master": "eth0/x","#).as_bytes()), 7);
    assert_eq!(code_of(base(r#""master": "eth0", "mode": "l2","#).as_bytes()), 7);
    assert_eq!(
        code_of(base(r#""master": "eth0", "ipMasq": true,"#).as_bytes()),
        7
    );
    assert_eq!(
        code_of(
            base(r#""master": "eth0", "runtimeConfig": {"portMappings": [{"hostPort": 8080, "containerPort": 80}]},"#)
                .as_bytes()
        ),
        2
    );
    assert_eq!(
        code_of(br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "master": "eth0"}"#),
        7
    );
}

/// The reference ipvlan plugin's documented keys (`master`, `mode`, `mtu`,
/// `linkInContainer`), type changed, `driver` added.
#[test]
fn ipvlan_conf_like_the_reference_plugin() {
    let c = parse(
        br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "ipvlan",
            "master": "eth0.10", "mode": "l3", "mtu": 1400, "linkInContainer": false,
            "ipam": {"type": "host-local", "subnet": "192.168.1.0/24"}}"#,
    )
    .unwrap();
    assert!(c.is_ipvlan() && c.has_master());
    let req = crate::ops::network_request(&c).unwrap();
    assert_eq!(req.driver.as_deref(), Some("ipvlan"));
    assert_eq!(req.mtu, Some(1400));
    assert_eq!(req.options.get("parent").map(String::as_str), Some("eth0.10"));
    assert_eq!(req.options.get("ipvlan_mode").map(String::as_str), Some("l3"));
    let p = req.parse().unwrap();
    assert_eq!(p.ipvlan_flag.as_deref(), Some("bridge"));
    let base = |extra: &str| {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "ipvlan", {extra}
                "ipam": {{"type": "host-local", "subnet": "192.168.1.0/24"}}}}"#
        )
    };
    // The reference's default mode is l2.
    let req = crate::ops::network_request(&parse(base(r#""master": "eth0","#).as_bytes()).unwrap()).unwrap();
    assert_eq!(req.options.get("ipvlan_mode").map(String::as_str), Some("l2"));
    for (extra, code, says) in [
        (r#""master": "eth0", "mode": "vepa","#, 7, "ipvlan mode \"vepa\""),
        (
            r#""master": "eth0", "linkInContainer": "yes","#,
            7,
            "expected a boolean",
        ),
        (
            r#""master": "eth0", "ipMasq": true,"#,
            7,
            "this ipvlan network has no bridge",
        ),
        (r#""master": "eth0", "vlan": 10,"#, 7, "\"master\": \"eth0.10\""),
        (r#""master": "eth0.4095","#, 7, "vlan id must be between 1-4094"),
        (
            r#""master": "eth0", "runtimeConfig": {"mac": "02:00:00:00:00:01"},"#,
            7,
            "master's MAC",
        ),
    ] {
        let e = parse(base(extra).as_bytes()).unwrap_err();
        assert_eq!(e.code, code, "{extra}: {}", e.msg);
        assert!(e.msg.contains(says), "{extra}: {}", e.msg);
    }
    // linkInContainer: the master is each container's own link, and a dotted name is
    // just its name there (nothing is made on the node).
    for driver in ["ipvlan", "macvlan"] {
        let c = parse(
            format!(
                r#"{{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "{driver}",
                    "master": "net1.7", "linkInContainer": true,
                    "ipam": {{"type": "host-local", "subnet": "192.168.1.0/24"}}}}"#
            )
            .as_bytes(),
        )
        .unwrap();
        let req = crate::ops::network_request(&c).unwrap();
        assert_eq!(
            req.options
                .get(netd::model::OPT_PARENT_IN_SANDBOX)
                .map(String::as_str),
            Some("true")
        );
        let p = req.parse().unwrap();
        assert!(p.parent_in_sandbox && p.parent.as_deref() == Some("net1.7"));
    }
    let e = parse(br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "linkInContainer": false}"#)
        .unwrap_err();
    assert!(e.msg.contains("add \"driver\""), "{}", e.msg);
}

/// The reference bridge plugin's VLAN keys: `vlan` 0..=4094 (0 none), nothing on macvlan,
/// the gateway link `<bridge>.<vlan>` must fit in a link name; `vlanTrunk` refused.
#[test]
fn vlan_like_the_reference_bridge_plugin() {
    let conf = |extra: &str| {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "v100", "type": "netd-cni", "bridge": "cnivl", {extra}
                "isGateway": true, "ipMasq": true, "preserveDefaultVlan": true,
                "ipam": {{"type": "host-local", "subnet": "10.10.0.0/24"}}}}"#
        )
    };
    let c = parse(conf(r#""vlan": 100,"#).as_bytes()).unwrap();
    assert_eq!(c.vlan_id(), Some(100));
    let req = crate::ops::network_request(&c).unwrap();
    assert_eq!(req.options.get("vlan").map(String::as_str), Some("100"));
    assert_eq!(req.parse().unwrap().vlan, Some(100));
    // 0 and no key: no VLAN, and no option for netd.
    for extra in [r#""vlan": 0,"#, ""] {
        let c = parse(conf(extra).as_bytes()).unwrap();
        assert_eq!(c.vlan_id(), None);
        assert!(!crate::ops::network_request(&c)
            .unwrap()
            .options
            .contains_key("vlan"));
    }
    assert!(parse(conf(r#""vlan": 4094,"#).as_bytes()).is_ok());
    for bad in ["4095", "-1", "70000", "\"7\"", "1.5", "true"] {
        let e = parse(conf(&format!(r#""vlan": {bad},"#)).as_bytes()).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{bad}: {}", e.msg);
        assert!(!e.msg.contains('\n'), "one line: {}", e.msg);
    }
    let e = parse(conf(r#""vlan": 4095,"#).as_bytes()).unwrap_err();
    assert!(
        e.msg
            .contains("invalid VLAN ID 4095 (must be between 0 and 4094)"),
        "{}",
        e.msg
    );
    // A bridge name that leaves no room for ".<vlan>".
    let e = parse(
        conf(r#""vlan": 100,"#)
            .replace(r#""bridge": "cnivl""#, r#""bridge": "bridge-name-13""#)
            .as_bytes(),
    )
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("longer than 15 bytes"), "{}", e.msg);
    // macvlan has no bridge: code 7.
    let e = parse(
        br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "macvlan",
            "master": "eth0", "vlan": 5}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("macvlan network has no bridge"), "{}", e.msg);
}

/// `vlanTrunk` as the reference bridge plugin reads it: ids and ranges from 1 to 4094,
/// the errors in its words (code 7), not with `vlan`; netd gets them merged.
#[test]
fn vlan_trunk_like_the_reference_bridge_plugin() {
    let conf = |trunk: &str| {
        format!(
            r#"{{"cniVersion": "1.0.0", "name": "tr", "type": "netd-cni", "bridge": "cnitr",
                "vlanTrunk": {trunk}, "ipam": {{"type": "netd", "subnet": "10.10.0.0/24"}}}}"#
        )
    };
    let c = parse(
        conf(r#"[{"id": 101}, {"minID": 200, "maxID": 299}, {"id": 102}, {"minID": 250, "maxID": 300}]"#)
            .as_bytes(),
    )
    .unwrap();
    assert_eq!(c.vlan_trunk().unwrap(), Some(vec![(101, 102), (200, 300)]));
    let req = crate::ops::network_request(&c).unwrap();
    assert_eq!(
        req.options.get(netd::model::OPT_VLAN_TRUNK).map(String::as_str),
        Some("101-102,200-300")
    );
    assert_eq!(req.parse().unwrap().vlan_trunk, vec![(101, 102), (200, 300)]);
    for (bad, why) in [
        (r#"[{"id": 0}]"#, "incorrect trunk id parameter"),
        (r#"[{"id": 4095}]"#, "incorrect trunk id parameter"),
        (r#"[{"id": "5"}]"#, "incorrect trunk id parameter"),
        (r#"[{"minID": 0, "maxID": 5}]"#, "incorrect trunk minID parameter"),
        (
            r#"[{"minID": 5, "maxID": 5000}]"#,
            "incorrect trunk maxID parameter",
        ),
        (r#"[{"minID": 9, "maxID": 5}]"#, "minID is greater than maxID"),
        (r#"[{"maxID": 5}]"#, "minID is missing"),
        (r#"[{"minID": 5}]"#, "maxID is missing"),
        (r#"[]"#, "lists no VLAN"),
        (r#"{"id": 5}"#, "expected a list"),
        (r#"[5]"#, "expected a list"),
    ] {
        let e = parse(conf(bad).as_bytes()).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{bad}: {}", e.msg);
        assert!(e.msg.contains(why), "{bad}: {}", e.msg);
    }
    let both = conf(r#"[{"id": 5}], "vlan": 7"#);
    let e = parse(both.as_bytes()).unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(
        e.msg.contains("cannot set vlan and vlanTrunk at the same time"),
        "{}",
        e.msg
    );
    let e = parse(
        br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "macvlan",
            "master": "eth0", "vlanTrunk": [{"id": 5}]}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    // null is no trunk.
    let c = parse(conf("null").as_bytes()).unwrap();
    assert_eq!(c.vlan_trunk().unwrap(), None);
}

/// What netd's model refuses in the network a config asks for is code 7 with the
/// model's reason, not a second copy of the rule here.
#[test]
fn the_network_is_checked_by_netds_model() {
    let cases = [
        (with("mtu", json!(20)), "invalid MTU 20"),
        (
            with("bridge", json!("a-bridge-name-too-long")),
            "com.docker.network.bridge.name",
        ),
        (with("name", json!("bad/name")), "network name"),
    ];
    for (conf, why) in cases {
        let e = parse(&conf).unwrap_err();
        assert_eq!(e.code, code::INVALID_CONFIG, "{}", e.msg);
        assert!(e.msg.contains(why), "{} should say {why}", e.msg);
    }
    let e = parse(
        br#"{"cniVersion": "1.0.0", "name": "v", "type": "netd-cni", "bridge": "vb",
            "vlan": 5, "promiscMode": true}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("VLAN networks share their bridge"), "{}", e.msg);
    // Without master (found at ADD) the mode is still checked now.
    let e = parse(
        br#"{"cniVersion": "1.0.0", "name": "lan", "type": "netd-cni", "driver": "macvlan", "mode": "l2"}"#,
    )
    .unwrap_err();
    assert_eq!(e.code, code::INVALID_CONFIG);
    assert!(e.msg.contains("macvlan mode \"l2\""), "{}", e.msg);
    // A delegated IPAM plugin's keys are its own business.
    let c = parse(
        br#"{"cniVersion": "1.0.0", "name": "d", "type": "netd-cni",
            "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.1.0.0/24"}, {"subnet": "10.2.0.0/24"}]]}}"#,
    );
    assert!(c.is_ok(), "{c:?}");
}

#[test]
fn an_overlay_config_goes_through_the_daemon_and_shapes_nothing() {
    let c = |v: Value| parse(&serde_json::to_vec(&v).unwrap());
    let ok = json!({"cniVersion": "1.1.0", "name": "ov", "type": "netd-cni",
        "driver": "overlay", "socket": "/run/netd/netd.sock"});
    let conf = c(ok.clone()).expect("overlay with a socket");
    assert!(conf.is_overlay());
    let req = crate::ops::network_request(&conf).unwrap();
    assert_eq!(req.driver.as_deref(), Some("overlay"));
    assert!(req.options.is_empty() && req.subnets.is_empty(), "{req:?}");
    // The subnet may be named (netd checks it against the network's).
    let mut with_subnet = ok.clone();
    with_subnet["ipam"] = json!({"type": "netd", "subnet": "10.112.0.0/24"});
    assert_eq!(
        crate::ops::network_request(&c(with_subnet).unwrap())
            .unwrap()
            .subnets
            .len(),
        1
    );
    // Keys that shape a network, and standalone mode, are refused.
    for (k, v) in [
        ("bridge", json!("br9")),
        ("vlan", json!(5)),
        ("isGateway", json!(false)),
    ] {
        let mut bad = ok.clone();
        bad[k] = v;
        assert_eq!(c(bad).err().map(|e| e.code), Some(code::INVALID_CONFIG), "{k}");
    }
    let mut ipam = ok.clone();
    ipam["ipam"] = json!({"type": "host-local", "subnet": "10.1.0.0/24"});
    assert_eq!(c(ipam).err().map(|e| e.code), Some(code::INVALID_CONFIG));
    let mut standalone = ok;
    standalone.as_object_mut().unwrap().remove("socket");
    assert_eq!(c(standalone).err().map(|e| e.code), Some(code::UNSUPPORTED_FIELD));
}
