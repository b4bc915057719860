//! The overlay agent's pure work at scale (docs/scale.md): a cluster of N nodes with E
//! endpoints each on one overlay network (every remote endpoint lands on one VXLAN
//! device, the worst case per device), built as the etcd store would hold it. Prints
//! - the store's size: bytes of keys + JSON values as `store::etcd` writes them;
//! - one node's full resync, timed: parse every endpoint value, the remote-name list,
//!   `fdb::wanted`, `fdb::diff` from nothing (first pass or periodic re-apply) and
//!   `fdb::stale` over a device holding all of it; the steady pass (`diff` of equal sets);
//! - memory: what one node's agent keeps between passes (the applied entries and the
//!   node map), and the peak during a pass, counted by a counting global allocator.
//!
//!   netd-bench-scale [NODES] [ENDPOINTS-PER-NODE] [RUNS]     (default 5000 20 5)
//!
//! No kernel, no etcd: the figures are the agent's share; the kernel's (an FDB and a
//! neighbour entry per remote endpoint) and etcd's are apart.

use std::alloc::{GlobalAlloc, Layout, System};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use netd::cluster::{fdb, keys, BlockRecord, EndpointRecord, NetworkRecord, NodeRecord};
use netd::engine::RemoteName;

struct Counting;
static NOW: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        let n = NOW.fetch_add(l.size(), Ordering::Relaxed) + l.size();
        PEAK.fetch_max(n, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        NOW.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn now() -> usize {
    NOW.load(Ordering::Relaxed)
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .map(|a| {
            a.parse()
                .unwrap_or_else(|_| panic!("argument {i}: not a number: {a}"))
        })
        .unwrap_or(default)
}

/// Node i's underlay address and its sandbox j's overlay address (a /26 per node).
fn vtep(i: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a00_0000u32 + 1 + i as u32)
}
fn ep_ip(i: usize, j: usize) -> Ipv4Addr {
    Ipv4Addr::from(0x0a80_0000u32 + (i as u32) * 64 + 2 + j as u32)
}

fn main() -> anyhow::Result<()> {
    let (n, e, runs) = (arg(1, 5000), arg(2, 20), arg(3, 5).max(1));
    anyhow::ensure!(e <= 60, "at most 60 endpoints per node (one /26 block)");
    let net = "ov";
    // The store, as (key, value) pairs of JSON like store::etcd writes.
    let mut kv: Vec<(String, Vec<u8>)> = Vec::new();
    let netrec = NetworkRecord {
        name: net.into(),
        subnet: "10.128.0.0/11".parse()?,
        gateway: "10.128.0.1".parse()?,
        vni: 4096,
        internal: false,
        created_by: "h1".into(),
        created: 1_800_000_000,
        block_prefix: None,
        encrypted: None,
    };
    kv.push((keys::network(net), serde_json::to_vec(&netrec)?));
    kv.push((keys::vni(4096), net.as_bytes().to_vec()));
    for i in 0..n {
        let node = format!("h{}", i + 1);
        let rec = NodeRecord {
            name: node.clone(),
            addr: vtep(i),
            data_port: 4789,
            started: 1_800_000_000,
        };
        kv.push((keys::node(&node), serde_json::to_vec(&rec)?));
        let block = ipnetwork::Ipv4Network::new(ep_ip(i, 0), 26)?;
        let block = ipnetwork::Ipv4Network::new(block.network(), 26)?;
        let b = BlockRecord {
            network: net.into(),
            block,
            node: node.clone(),
        };
        kv.push((keys::block(net, &block), serde_json::to_vec(&b)?));
        for j in 0..e {
            let sandbox = format!("c{}-{j}", i + 1);
            let ip = ep_ip(i, j);
            let o = ip.octets();
            let r = EndpointRecord {
                network: net.into(),
                node: node.clone(),
                sandbox: sandbox.clone(),
                ip,
                mac: format!("02:42:{:02x}:{:02x}:{:02x}:{:02x}", o[0], o[1], o[2], o[3]),
                vtep: vtep(i),
                names: vec![sandbox.clone()],
                labels: Default::default(),
                lb: false,
            };
            kv.push((keys::endpoint(net, &node, &sandbox), serde_json::to_vec(&r)?));
        }
    }
    let total: usize = kv.iter().map(|(k, v)| k.len() + v.len()).sum();
    let ep_bytes: usize = kv
        .iter()
        .filter(|(k, _)| k.starts_with(&keys::endpoints()))
        .map(|(k, v)| k.len() + v.len())
        .sum();
    println!(
        "cluster: {n} nodes x {e} endpoints on one overlay network = {} endpoints, {} keys",
        n * e,
        kv.len()
    );
    println!(
        "etcd state: {:.1} MiB of keys + values ({:.1} MiB endpoints, {} B per endpoint, {} B per node with its endpoints)",
        total as f64 / 1048576.0,
        ep_bytes as f64 / 1048576.0,
        ep_bytes / (n * e),
        total / n
    );
    // The values the store hands the agent (a range read of the prefix).
    let endpoint_values: Vec<&[u8]> = kv
        .iter()
        .filter(|(k, _)| k.starts_with(&keys::endpoints()))
        .map(|(_, v)| v.as_slice())
        .collect();
    let node_values: Vec<&[u8]> = kv
        .iter()
        .filter(|(k, _)| k.starts_with(&keys::nodes()))
        .map(|(_, v)| v.as_slice())
        .collect();
    let me = "h1";

    // One full resync of node h1, `runs` times: the median and the slowest.
    let mut times = Vec::new();
    let mut peak_extra = 0;
    let mut kept = 0;
    let mut ops_n = 0;
    for _ in 0..runs {
        let base = now();
        PEAK.store(base, Ordering::Relaxed);
        let t0 = Instant::now();
        let nodes: BTreeMap<String, NodeRecord> = node_values
            .iter()
            .map(|v| serde_json::from_slice::<NodeRecord>(v).map(|r| (r.name.clone(), r)))
            .collect::<Result<_, _>>()?;
        let eps: Vec<EndpointRecord> = endpoint_values
            .iter()
            .map(|v| serde_json::from_slice(v))
            .collect::<Result<_, _>>()?;
        let remote: Vec<RemoteName> = eps
            .iter()
            .filter(|x| x.node != me)
            .map(|x| RemoteName {
                network: x.network.clone(),
                names: x.names.clone(),
                ip: x.ip.into(),
                sandbox: x.sandbox.clone(),
                labels: x.labels.clone(),
            })
            .collect();
        let want = fdb::wanted(net, me, &eps);
        // The sweep reads the device back (here: holding exactly `want`), then sets all.
        let held: Vec<([u8; 6], Ipv4Addr)> = want.iter().map(|x| (x.mac, x.vtep)).collect();
        let neigh: Vec<Ipv4Addr> = want.iter().map(|x| x.ip).collect();
        let mut ops = fdb::stale(&held, &neigh, &want);
        ops.extend(fdb::diff(&BTreeSet::new(), &want));
        let took = t0.elapsed();
        peak_extra = PEAK.load(Ordering::Relaxed) - base;
        ops_n = ops.len();
        drop((eps, remote, held, neigh, ops));
        // What stays until the next pass: the applied entries and the node map.
        kept = now() - base;
        drop((nodes, want));
        times.push(took);
    }
    times.sort();
    let med = times[times.len() / 2];
    let max = times[times.len() - 1];
    println!(
        "full resync of one node ({} remote endpoints, {ops_n} FDB/neighbour ops): median {:.0} ms, slowest {:.0} ms of {runs}",
        n * e - e,
        ms(med),
        ms(max)
    );
    // The steady pass: the store re-read and nothing changed.
    let eps: Vec<EndpointRecord> = endpoint_values
        .iter()
        .map(|v| serde_json::from_slice(v))
        .collect::<Result<_, _>>()?;
    let have = fdb::wanted(net, me, &eps);
    let t0 = Instant::now();
    let eps2: Vec<EndpointRecord> = endpoint_values
        .iter()
        .map(|v| serde_json::from_slice(v))
        .collect::<Result<_, _>>()?;
    let want = fdb::wanted(net, me, &eps2);
    let ops = fdb::diff(&have, &want);
    let steady = t0.elapsed();
    println!(
        "steady pass (re-read, nothing changed, {} ops): {:.0} ms",
        ops.len(),
        ms(steady)
    );
    println!(
        "memory of one node's agent: {:.1} MiB kept between passes ({} B per remote node), peak {:.1} MiB during a full resync",
        kept as f64 / 1048576.0,
        kept / n,
        peak_extra as f64 / 1048576.0
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}
