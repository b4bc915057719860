//! `NetworkRequest::mismatch`, field by field: the same value matches, another value is
//! a reason naming both, a value left out is the default (or "any" for the bridge name
//! and the subnets), and a malformed value is an error.

use crate::model::{
    Network, NetworkRequest, Subnet, SubnetRequest, OPT_BRIDGE_NAME, OPT_HAIRPIN, OPT_INHIBIT_IPV4,
    OPT_INHIBIT_IPV6, OPT_PROMISC, OPT_VLAN, OPT_VLAN_TRUNK,
};

fn request(driver: &str, opts: &[(&str, &str)]) -> NetworkRequest {
    NetworkRequest {
        name: "podnet".into(),
        driver: Some(driver.into()),
        subnets: vec![SubnetRequest {
            subnet: Some("10.9.0.0/24".into()),
            ..Default::default()
        }],
        options: opts.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        ..Default::default()
    }
}

/// The network a request makes (with IPAM's answer as its subnet).
fn made_by(req: &NetworkRequest) -> Network {
    let subnets = vec![Subnet {
        subnet: "10.9.0.0/24".parse().unwrap(),
        gateway: "10.9.0.1".parse().unwrap(),
        ip_range: None,
    }];
    req.parse()
        .unwrap()
        .into_network("id".into(), subnets, req, "netctl", 0)
}

fn bridge(opts: &[(&str, &str)]) -> Network {
    made_by(&request("bridge", opts))
}

/// What `req` says about `net`: "" when it matches, the reason, or "error: …".
fn verdict(net: &Network, driver: &str, opts: &[(&str, &str)]) -> String {
    match request(driver, opts).mismatch(net) {
        Ok(None) => String::new(),
        Ok(Some(why)) => why,
        Err(e) => format!("error: {e}"),
    }
}

#[track_caller]
fn assert_differs(v: String, want: &str) {
    assert!(
        v.contains(want) && !v.starts_with("error"),
        "{v:?} should say {want:?}"
    );
}

#[track_caller]
fn assert_malformed(v: String, want: &str) {
    assert!(
        v.starts_with("error: ") && v.contains(want),
        "{v:?} should be an error saying {want:?}"
    );
}

#[test]
fn bridge_name_not_given_means_any() {
    let net = bridge(&[(OPT_BRIDGE_NAME, "podbr0")]);
    assert_eq!(verdict(&net, "bridge", &[(OPT_BRIDGE_NAME, "podbr0")]), "");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_BRIDGE_NAME, "other0")]),
        "network podnet exists with bridge podbr0, not other0",
    );
    assert_eq!(verdict(&net, "bridge", &[]), "", "any bridge will do");
    assert_malformed(
        verdict(&net, "bridge", &[(OPT_BRIDGE_NAME, "a-name-far-too-long")]),
        "com.docker.network.bridge.name",
    );
}

#[test]
fn subnets_requested_must_be_the_networks() {
    let net = bridge(&[]);
    assert_eq!(verdict(&net, "bridge", &[]), "");
    let mut r = request("bridge", &[]);
    r.subnets[0].subnet = Some("10.8.0.0/24".into());
    assert_differs(
        r.mismatch(&net).unwrap().unwrap_or_default(),
        "network podnet exists with subnets [\"10.9.0.0/24\"], not 10.8.0.0/24",
    );
    r.subnets.clear();
    assert_eq!(r.mismatch(&net), Ok(None), "no subnet asked for: any will do");
    r.subnets = vec![SubnetRequest {
        subnet: Some("10.9.0.5/24".into()),
        ..Default::default()
    }];
    let e = r.mismatch(&net).unwrap_err();
    assert!(e.contains("host bits are set"), "{e}");
}

#[test]
fn driver() {
    let net = bridge(&[]);
    let mut r = request("bridge", &[]);
    assert_eq!(r.mismatch(&net), Ok(None));
    r.driver = None;
    assert_eq!(r.mismatch(&net), Ok(None), "not given is bridge");
    assert_differs(
        verdict(&net, "macvlan", &[("parent", "eth0")]),
        "network podnet exists with driver bridge, not macvlan",
    );
    // Overlay networks come from the cluster store, never from a local request.
    assert_malformed(
        verdict(&net, "overlay", &[]),
        "overlay networks live in the cluster store",
    );
    assert_malformed(verdict(&net, "vxlan", &[]), "driver \"vxlan\" is not supported");
}

#[test]
fn macvlan_parent() {
    let net = made_by(&request("macvlan", &[("parent", "eth0")]));
    assert_eq!(verdict(&net, "macvlan", &[("parent", "eth0")]), "");
    assert_differs(
        verdict(&net, "macvlan", &[("parent", "eth1")]),
        "network podnet exists as macvlan on eth0, not on eth1",
    );
    assert_differs(
        verdict(&net, "bridge", &[]),
        "network podnet exists with driver macvlan, not bridge",
    );
    // A macvlan network cannot be made without its parent, so the request is refused.
    assert_malformed(verdict(&net, "macvlan", &[]), "-o parent=IFACE");
    assert_malformed(verdict(&net, "macvlan", &[("parent", "lo")]), "loopback");
}

#[test]
fn vlan() {
    let net = bridge(&[(OPT_BRIDGE_NAME, "vbr"), (OPT_VLAN, "100")]);
    assert_eq!(verdict(&net, "bridge", &[(OPT_VLAN, "100")]), "");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_VLAN, "200")]),
        "exists with vlan 100, not 200",
    );
    assert_differs(verdict(&net, "bridge", &[]), "exists with vlan 100, not none");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_VLAN, "0")]),
        "exists with vlan 100, not none",
    );
    // Read as "no VLAN" before, which then did not match for the wrong reason.
    assert_malformed(verdict(&net, "bridge", &[(OPT_VLAN, "abc")]), "option vlan=abc");
    assert_eq!(verdict(&bridge(&[]), "bridge", &[]), "");
}

#[test]
fn gateway_on_the_bridge() {
    let net = bridge(&[(OPT_INHIBIT_IPV4, "true"), (OPT_INHIBIT_IPV6, "true")]);
    let both = [(OPT_INHIBIT_IPV4, "true"), (OPT_INHIBIT_IPV6, "yes")];
    assert_eq!(verdict(&net, "bridge", &both), "");
    assert_differs(
        verdict(
            &net,
            "bridge",
            &[(OPT_INHIBIT_IPV4, "true"), (OPT_INHIBIT_IPV6, "false")],
        ),
        "exists with no gateway on the bridge, not no IPv4 gateway on the bridge",
    );
    assert_differs(
        verdict(&net, "bridge", &[]),
        "exists with no gateway on the bridge, not its gateway on the bridge",
    );
    assert_malformed(
        verdict(&net, "bridge", &[(OPT_INHIBIT_IPV4, "maybe")]),
        "expected true or false",
    );
    assert_eq!(
        verdict(&bridge(&[]), "bridge", &[(OPT_INHIBIT_IPV6, "false")]),
        ""
    );
}

#[test]
fn promiscuous_bridge() {
    let net = bridge(&[(OPT_PROMISC, "true")]);
    assert_eq!(verdict(&net, "bridge", &[(OPT_PROMISC, "on")]), "");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_PROMISC, "false")]),
        "exists with a promiscuous bridge, not a bridge that is not promiscuous",
    );
    assert_differs(
        verdict(&net, "bridge", &[]),
        "not a bridge that is not promiscuous",
    );
    assert_malformed(
        verdict(&net, "bridge", &[(OPT_PROMISC, "2")]),
        "expected true or false",
    );
}

#[test]
fn vlan_trunk() {
    let net = bridge(&[(OPT_VLAN_TRUNK, "101,200-299")]);
    assert_eq!(verdict(&net, "bridge", &[(OPT_VLAN_TRUNK, "200-299,101")]), "");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_VLAN_TRUNK, "101")]),
        "exists with vlan trunk 101,200-299, not 101",
    );
    assert_differs(
        verdict(&net, "bridge", &[]),
        "exists with vlan trunk 101,200-299, not none",
    );
    assert_malformed(verdict(&net, "bridge", &[(OPT_VLAN_TRUNK, "5000")]), "1 to 4094");
}

#[test]
fn hairpin_mode() {
    let net = bridge(&[(OPT_HAIRPIN, "false")]);
    assert_eq!(verdict(&net, "bridge", &[(OPT_HAIRPIN, "off")]), "");
    assert_differs(
        verdict(&net, "bridge", &[(OPT_HAIRPIN, "true")]),
        "exists with hairpin mode off on its ports, not on",
    );
    assert_differs(
        verdict(&net, "bridge", &[]),
        "hairpin mode off on its ports, not on",
    );
    // Read as "off" before: anything but a yes turned hairpin off.
    assert_malformed(
        verdict(&net, "bridge", &[(OPT_HAIRPIN, "bogus")]),
        "expected true or false",
    );
    assert_eq!(verdict(&bridge(&[]), "bridge", &[(OPT_HAIRPIN, "true")]), "");
}
