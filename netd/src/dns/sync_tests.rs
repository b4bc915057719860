//! The engine hook on the fake kernel: every sandbox operation has changed the names
//! other sandboxes see by the time it returns, and resolv.conf points at 127.0.0.11.

use std::sync::Arc;

use super::{Dns, DnsSettings};
use crate::engine::{Engine, EngineConfig};
use crate::kernel::fake::FakeKernel;
use crate::model::{EndpointRequest, NetworkRequest, SandboxRequest, SubnetRequest};
use crate::store::MemStore;

fn net(name: &str, subnet: &str) -> NetworkRequest {
    NetworkRequest {
        name: name.into(),
        subnets: vec![SubnetRequest {
            subnet: Some(subnet.into()),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn sees(d: &Dns, who: &str, name: &str) -> Vec<String> {
    d.listing(who)
        .unwrap_or_default()
        .into_iter()
        .filter(|r| r.name == name && r.kind == "A")
        .map(|r| r.value)
        .collect()
}

#[test]
fn engine_operations_change_names_before_returning() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let tag = format!("{}-{}", std::process::id(), rand::random::<u32>());
    let cfg = EngineConfig {
        netns_dir: std::env::temp_dir().join(format!("netd-dns-test-{tag}")),
        etc_netns_dir: std::env::temp_dir().join(format!("netd-dns-test-etc-{tag}")),
        ..Default::default()
    };
    let etc = cfg.etc_netns_dir.clone();
    let k = Arc::new(FakeKernel::default());
    let (mut e, _) = Engine::open(k.clone(), Arc::new(MemStore::default()), cfg).unwrap();
    let d = Arc::new(
        Dns::new(
            DnsSettings::default(),
            "nameserver 10.0.0.53\n",
            rt.handle().clone(),
        )
        .unwrap(),
    );
    assert_eq!(d.upstreams(), ["10.0.0.53:53".parse().unwrap()]);
    e.set_dns(d.clone());
    e.create_network(&net("n", "10.9.0.0/24")).unwrap();
    e.create_network(&net("m", "10.8.0.0/24")).unwrap();
    let a = e.create_sandbox(&SandboxRequest::on("a", &["n"])).unwrap();
    e.create_sandbox(&SandboxRequest::on("b", &["n"])).unwrap();
    e.create_sandbox(&SandboxRequest::on("c", &["m"])).unwrap();
    let a_ip = a.endpoints[0].ipv4.unwrap().ip().to_string();
    assert_eq!(sees(&d, "b", "a"), vec![a_ip]);
    assert!(sees(&d, "c", "a").is_empty());
    // Written by a plan step, which the fake kernel keeps.
    let rc = k.files()[&etc.join("b/resolv.conf")].clone();
    assert!(
        rc.contains("nameserver 127.0.0.11") && !rc.contains("10.0.0.53"),
        "{rc}"
    );

    let ep = e
        .connect(
            "m",
            &EndpointRequest {
                network: "m".into(),
                aliases: vec!["al".into()],
                ..Default::default()
            },
            "a",
        )
        .unwrap();
    assert_eq!(sees(&d, "c", "al"), [ep.ipv4.unwrap().ip().to_string()]);
    assert!(sees(&d, "b", "al").is_empty(), "alias is scoped to network m");
    e.disconnect("m", "a").unwrap();
    assert!(sees(&d, "c", "al").is_empty());
    e.remove_sandbox("a").unwrap();
    assert!(sees(&d, "b", "a").is_empty());
    assert!(d.listing("a").is_none());
    // A failed operation changes no names.
    assert!(e.create_sandbox(&SandboxRequest::on("b", &["n"])).is_err());
    assert!(e.create_sandbox(&SandboxRequest::on("x", &["nosuch"])).is_err());
    assert!(d.listing("x").is_none());
    // Creating a network makes its subnet's PTR names ours at once (NXDOMAIN, not
    // forwarded upstream); removing it hands them back.
    let ptr = |d: &Dns| {
        d.shared
            .table()
            .lookup("b", "9.0.7.10.in-addr.arpa", super::records::Kind::Ptr)
    };
    assert!(matches!(ptr(&d), super::records::Lookup::NotOurs));
    e.create_network(&net("fresh", "10.7.0.0/24")).unwrap();
    assert!(matches!(ptr(&d), super::records::Lookup::NxDomain));
    e.remove_network("fresh").unwrap();
    assert!(matches!(ptr(&d), super::records::Lookup::NotOurs));
    let _ = std::fs::remove_dir_all(&etc);
}
