use super::*;
use crate::firewall::ruleset::services::FwVip;
use crate::kernel::bpf::LbOp;
use crate::kernel::bpf_types::{Lb4Key, Lb6Key};
use crate::kernel::fake::FakeKernel;
use crate::model::Proto;

/// One family's maps in memory, counting writes.
#[derive(Clone)]
struct FakeMaps<A>(Arc<Mutex<(LbTables<A>, usize)>>);

impl<A> Default for FakeMaps<A> {
    fn default() -> FakeMaps<A> {
        FakeMaps(Arc::new(Mutex::new((LbTables::default(), 0))))
    }
}

impl<A: LbAddr> LbMaps<A> for FakeMaps<A> {
    fn dump(&self) -> Result<LbTables<A>, BpfError> {
        Ok(self.0.lock().unwrap().0.clone())
    }
    fn apply(&mut self, ops: &[LbOp<A>]) -> Result<(), BpfError> {
        let mut g = self.0.lock().unwrap();
        g.1 += ops.len();
        ebpf_plan::apply(&mut g.0, ops);
        Ok(())
    }
}

fn web(backends: &[&str], ingress: bool) -> FwService {
    FwService {
        namespace: "default".into(),
        name: "web".into(),
        ports: vec![(80, 8080, Proto::Tcp)],
        affinity: None,
        vips: vec![FwVip {
            network: "n".into(),
            vip: "10.0.0.200".parse().unwrap(),
            backends: backends.iter().map(|b| b.parse().unwrap()).collect(),
            bridge: "netd-n".into(),
        }],
        ingress: if ingress {
            vec![crate::firewall::ruleset::services::FwIngress {
                published: 8088,
                target: 8080,
                proto: Proto::Tcp,
                masquerade: false,
            }]
        } else {
            vec![]
        },
    }
}

fn lb(maps: &FakeMaps<u32>, k: Arc<FakeKernel>) -> EbpfLb {
    lb2(maps, &FakeMaps::default(), k)
}

fn lb2(v4: &FakeMaps<u32>, v6: &FakeMaps<[u32; 4]>, k: Arc<FakeKernel>) -> EbpfLb {
    EbpfLb::with_maps(
        k,
        (Box::new(v4.clone()), Box::new(v6.clone())),
        7,
        Box::new(|_| Ok(42)),
    )
    .unwrap()
}

/// A service with an IPv4 VIP on one network and an IPv6 VIP on another: each family's
/// maps get its VIP with its own backends, and a change of the IPv6 backends writes
/// only the IPv6 maps.
#[test]
fn each_family_has_its_maps() {
    let (m4, m6) = (FakeMaps::default(), FakeMaps::default());
    let l = lb2(&m4, &m6, Arc::new(FakeKernel::default()));
    let mut s = web(&["10.0.0.2"], false);
    s.vips.push(FwVip {
        network: "n6".into(),
        vip: "fd00:6::c8".parse().unwrap(),
        backends: vec!["fd00:6::2".parse().unwrap(), "10.0.6.2".parse().unwrap()],
        bridge: "netd-n6".into(),
    });
    let a = vec![s.clone()];
    l.set_members(&[("n6".into(), "/proc/self/ns/net".into())]);
    l.sync_full(&a).unwrap();
    let (t4, t6) = (m4.0.lock().unwrap().0.clone(), m6.0.lock().unwrap().0.clone());
    let k4 = Lb4Key::new("10.0.0.200".parse().unwrap(), 80, 6, 0);
    let k6 = Lb6Key::new("fd00:6::c8".parse().unwrap(), 80, 6, 0);
    assert_eq!(t4.services[&k4].count, 1);
    assert_eq!(t4.services.len(), 2, "the IPv4 VIP's master and slot only");
    assert_eq!(t4.backends.len(), 1);
    assert_eq!(
        t6.services[&k6].count, 1,
        "the IPv4 backend is not the IPv6 VIP's"
    );
    assert_eq!(t6.services.len(), 2);
    let be6 = t6.backends.values().next().unwrap();
    assert_eq!(
        be6.address.ip(),
        "fd00:6::2".parse::<std::net::Ipv6Addr>().unwrap()
    );
    assert_eq!(u16::from_be(be6.port), 8080);
    assert_eq!(t6.reverse_nat.values().next().unwrap().address, k6.address);
    assert_eq!(t6.scope.len(), 2, "n6's member and the host");
    assert_eq!(t4.scope.len(), 1, "the host (n has no member)");
    let mut b = a.clone();
    b[0].vips[1].backends.push("fd00:6::3".parse().unwrap());
    let (w4, w6) = (m4.0.lock().unwrap().1, m6.0.lock().unwrap().1);
    l.sync_diff(&a, &b).unwrap();
    assert_eq!(m4.0.lock().unwrap().1, w4, "the IPv4 maps were written");
    assert_eq!(m6.0.lock().unwrap().1 - w6, 3, "backend, slot, master");
    assert_eq!(m6.0.lock().unwrap().0.services[&k6].count, 2);
}

/// A backend change writes its entries only; a restart over the same maps writes
/// nothing; only services with ingress ports reach nftables.
#[test]
fn writes_what_changed_and_restart_writes_nothing() {
    let maps = FakeMaps::default();
    let k = Arc::new(FakeKernel::default());
    let l = lb(&maps, k.clone());
    let (a, b) = (
        vec![web(&["10.0.0.2"], false)],
        vec![web(&["10.0.0.2", "10.0.0.3"], false)],
    );
    l.sync_full(&a).unwrap();
    let first = maps.0.lock().unwrap().1;
    assert_eq!(first, 1 + 1 + 1 + 1 + 1, "backend, rev nat, scope, slot, master");
    l.sync_diff(&a, &b).unwrap();
    assert_eq!(maps.0.lock().unwrap().1 - first, 3, "backend, slot, master");
    assert!(
        k.nft_batches().is_empty(),
        "no ingress port: nothing for nftables"
    );
    let again = lb(&maps, k.clone());
    let n = maps.0.lock().unwrap().1;
    again.sync_full(&b).unwrap();
    assert_eq!(maps.0.lock().unwrap().1, n, "a restart rewrote entries");
    again.sync_diff(&b, &[web(&["10.0.0.2"], true)]).unwrap();
    assert_eq!(k.nft_batches().len(), 1, "the ingress port goes to nftables");
}

/// The routing mesh in memory, counting the batches written to it.
#[derive(Clone, Default)]
struct FakeNp(Arc<Mutex<(NpTables, usize)>>);

impl NpMaps for FakeNp {
    fn dump(&self) -> Result<NpTables, BpfError> {
        Ok(self.0.lock().unwrap().0.clone())
    }
    fn apply(&mut self, ops: &[crate::kernel::bpf_tc::NpOp]) -> Result<(), BpfError> {
        let mut g = self.0.lock().unwrap();
        g.1 += 1;
        super::super::ebpf_np::apply(&mut g.0, ops);
        Ok(())
    }
    fn attach_to(&mut self, _dev: &str) -> Result<(), BpfError> {
        Ok(())
    }
    fn detach_others(&mut self, _keep: &[String]) -> Vec<String> {
        Vec::new()
    }
}

/// A diff leaves the routing mesh alone unless a changed service has ingress ports or
/// a network changed sides since its ports were planned.
#[test]
fn the_mesh_plans_only_for_ingress_changes_and_networks_that_change_sides() {
    let np = FakeNp::default();
    let mut l = lb(&FakeMaps::default(), Arc::new(FakeKernel::default()));
    l.mesh = Some(Mutex::new(Mesh {
        maps: Box::new(np.clone()),
        held: NpTables::default(),
        served: BTreeMap::new(),
        networks: BTreeMap::new(),
        devices: Some(Vec::new()),
        size: 251,
        planned_local: None,
        attached: Vec::new(),
    }));
    l.set_networks(&[("n".into(), "netd-n".into(), true)]);
    let mut api = web(&["10.0.0.4"], false);
    api.name = "api".into();
    api.vips[0].vip = "10.0.0.201".parse().unwrap();
    let a = vec![web(&["10.0.0.2"], true), api.clone()];
    l.sync_full(&a).unwrap();
    let writes = || np.0.lock().unwrap().1;
    assert_eq!(writes(), 1, "the published port's table and entry");
    // A backend of the service without ingress ports: nothing for the mesh.
    let mut b = a.clone();
    b[1].vips[0].backends.push("10.0.0.5".parse().unwrap());
    l.sync_diff(&a, &b).unwrap();
    assert_eq!(writes(), 1);
    // A backend of the published service: its table.
    let mut c = b.clone();
    c[0].vips[0].backends.push("10.0.0.3".parse().unwrap());
    l.sync_diff(&b, &c).unwrap();
    assert_eq!(writes(), 2);
    // Network n no longer local (overlay): the next diff, even of nothing, drops the port.
    l.set_networks(&[("n".into(), "netd-n".into(), false)]);
    l.sync_diff(&c, &c).unwrap();
    assert_eq!(writes(), 3);
    assert!(np.0.lock().unwrap().0.services.is_empty(), "the port left tc");
}
