use super::*;
use crate::firewall::ruleset::services::FwVip;
use crate::kernel::bpf::Lb4Op;
use crate::kernel::fake::FakeKernel;
use crate::model::Proto;

/// Maps in memory, counting writes.
#[derive(Clone, Default)]
struct FakeMaps(Arc<Mutex<(Lb4Tables, usize)>>);

impl Lb4Maps for FakeMaps {
    fn dump(&self) -> Result<Lb4Tables, BpfError> {
        Ok(self.0.lock().unwrap().0.clone())
    }
    fn apply(&mut self, ops: &[Lb4Op]) -> Result<(), BpfError> {
        let mut g = self.0.lock().unwrap();
        g.1 += ops.len();
        for op in ops {
            let t = &mut g.0;
            match op {
                Lb4Op::PutBackend(i, b) => drop(t.backends.insert(*i, *b)),
                Lb4Op::PutReverseNat(i, r) => drop(t.reverse_nat.insert(*i, *r)),
                Lb4Op::PutScope(k) => drop(t.scope.insert(*k)),
                Lb4Op::PutService(k, v) => drop(t.services.insert(*k, *v)),
                Lb4Op::DelService(k) => drop(t.services.remove(k)),
                Lb4Op::DelScope(k) => drop(t.scope.remove(k)),
                Lb4Op::DelReverseNat(i) => drop(t.reverse_nat.remove(i)),
                Lb4Op::DelBackend(i) => drop(t.backends.remove(i)),
            }
        }
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

fn lb(maps: &FakeMaps, k: Arc<FakeKernel>) -> EbpfLb {
    EbpfLb::with_maps(k, Box::new(maps.clone()), 7, Box::new(|_| Ok(42))).unwrap()
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
