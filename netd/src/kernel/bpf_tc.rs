//! Every kernel call of the routing mesh (`ebpf/tc_nodeport4.c`): loading its two tc
//! programs, attaching them to the host's devices, pinning, writing its maps, and
//! running a program on a packet (BPF_PROG_TEST_RUN, for tests).
//!
//! Attach: tcx (a bpf_link per device and direction, Linux >= 6.6), pinned beside the
//! socket-LB pins (`kernel::bpf`, one directory per daemon namespace), so a kill -9
//! leaves the mesh running and removing the directory detaches it. A kernel without
//! tcx gets a clsact qdisc and a direct-action filter instead; those are not links and
//! outlive the pins: `detach_clsact` removes them by program name (not tracked: nothing
//! calls it for a device that left, see docs/services.md).
//!
//! Link pins are named after the device *and* its ifindex: a device deleted and made
//! again under the same name gets fresh links (its old links died with it).

use std::collections::BTreeMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::links::{FdLink, LinkOrder, PinnedLink};
use aya::programs::tc::{self, TcAttachOptions};
use aya::programs::{SchedClassifier, TcAttachType, TestRun, TestRunOptions};
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};

use super::bpf::{gone, map_err, prog_err, BpfError};
use super::bpf_types::*;

const OBJECT: &[u8] = include_bytes_aligned!(concat!(env!("OUT_DIR"), "/tc_nodeport4.o"));
const PROG_IN: &str = "netd_nodeport4_in";
const PROG_OUT: &str = "netd_nodeport4_out";

/// Which of the two programs: DNAT on the way in, reverse NAT on the way out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TcDir {
    Ingress,
    Egress,
}

impl TcDir {
    fn program(self) -> &'static str {
        match self {
            TcDir::Ingress => PROG_IN,
            TcDir::Egress => PROG_OUT,
        }
    }
    fn attach_type(self) -> TcAttachType {
        match self {
            TcDir::Ingress => TcAttachType::Ingress,
            TcDir::Egress => TcAttachType::Egress,
        }
    }
    fn tag(self) -> &'static str {
        match self {
            TcDir::Ingress => "in",
            TcDir::Egress => "out",
        }
    }
}

/// What netd writes into the routing mesh's maps, as plain data (`lb::ebpf_np` plans it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NpTables {
    pub services: BTreeMap<Lb4NodePortKey, Lb4NodePort>,
    /// Maglev id -> its table, slot i at index i (`Lb4Flow::default()`: a slot the
    /// maps do not hold).
    pub tables: BTreeMap<u32, Vec<Lb4Flow>>,
}

/// One batch of map writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NpOp {
    /// Slots of table `id` (slot, backend).
    PutSlots(u32, Vec<(u32, Lb4Flow)>),
    /// Slots of table `id` (the whole table, or the tail a smaller one drops).
    DelSlots(u32, std::ops::Range<u32>),
    PutService(Lb4NodePortKey, Lb4NodePort),
    DelService(Lb4NodePortKey),
}

/// The routing mesh as `lb::ebpf` sees it: the real one (`NodePort`) or a fake in tests.
pub trait NpMaps: Send {
    fn dump(&self) -> Result<NpTables, BpfError>;
    /// Applies `ops` in order, stopping at the first failure.
    fn apply(&mut self, ops: &[NpOp]) -> Result<(), BpfError>;
    /// Attaches the programs to `dev` (both directions) unless they are there.
    fn attach_to(&mut self, dev: &str) -> Result<(), BpfError>;
    /// Detaches from every device not in `keep`; returns those.
    fn detach_others(&mut self, keep: &[String]) -> Vec<String>;
}

/// The host's devices the mesh serves by default (`--lb-devices` unset), after
/// Cilium's `devices`: every device with an IPv4 address, except loopback and the
/// bridges netd made (`bridges`), whose sandboxes reach published ports through
/// nftables.
pub fn default_devices(bridges: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let v4 = a.address.as_ref().and_then(|s| s.as_sockaddr_in()).is_some();
        if !v4 || a.flags.contains(nix::net::if_::InterfaceFlags::IFF_LOOPBACK) {
            continue;
        }
        if bridges.contains(&a.interface_name) || out.contains(&a.interface_name) {
            continue;
        }
        out.push(a.interface_name);
    }
    out.sort();
    out
}

/// `bpf(BPF_MAP_UPDATE_BATCH)`: writes `keys[i] -> values[i]` into the map of `fd` in
/// one call; returns how many it wrote: all, or 0 when the kernel has no batch op for
/// the map (the caller then writes one by one). An error may come after some writes.
/// A Maglev table moves about 16381/N slots on a backend change, and aya 0.14 writes an
/// entry per `bpf()` call.
fn update_batch<K: aya::Pod, V: aya::Pod>(fd: &OwnedFd, keys: &[K], values: &[V]) -> std::io::Result<usize> {
    /// `union bpf_attr`'s `batch` member.
    #[repr(C)]
    struct BatchAttr {
        in_batch: u64,
        out_batch: u64,
        keys: u64,
        values: u64,
        count: u32,
        map_fd: u32,
        elem_flags: u64,
        flags: u64,
    }
    const BPF_MAP_UPDATE_BATCH: libc::c_long = 26;
    const ENOTSUPP: i32 = 524; // the kernel's own, not EOPNOTSUPP
    if keys.is_empty() {
        return Ok(0);
    }
    let mut attr = BatchAttr {
        in_batch: 0,
        out_batch: 0,
        keys: keys.as_ptr() as u64,
        values: values.as_ptr() as u64,
        count: keys.len().min(values.len()) as u32,
        map_fd: fd.as_raw_fd() as u32,
        elem_flags: 0, // BPF_ANY
        flags: 0,
    };
    // SAFETY: `attr` is a valid bpf_attr prefix for this command; keys and values point
    // to `count` Pod entries each, of the map's key and value sizes, alive for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            BPF_MAP_UPDATE_BATCH,
            &mut attr as *mut BatchAttr,
            std::mem::size_of::<BatchAttr>() as libc::c_uint,
        )
    };
    if r == 0 {
        return Ok(keys.len());
    }
    let e = std::io::Error::last_os_error();
    match e.raw_os_error() {
        // No batch op for this map type: refused before any write.
        Some(libc::EOPNOTSUPP | ENOTSUPP) => Ok(0),
        _ => Err(e),
    }
}

/// Whether `dev` exists in this namespace (a `--lb-devices` name is checked at start).
pub fn device_exists(dev: &str) -> bool {
    ifindex(dev).is_ok()
}

/// The routing-mesh programs, loaded, and their maps (pinned in `dir`).
pub struct NodePort {
    pub dir: PathBuf,
    obj: Ebpf,
    nodeport: HashMap<MapData, Lb4NodePortKey, Lb4NodePort>,
    maglev: HashMap<MapData, Lb4MaglevKey, Lb4Flow>,
    /// `maglev`'s fd for batch writes (aya 0.14 has no batch call).
    maglev_fd: OwnedFd,
}

impl NodePort {
    /// Loads both programs (not attached) with their maps pinned in `dir`, a directory
    /// on bpffs (made when missing; `kernel::bpf::SockLb::open` mounts bpffs).
    pub fn load(dir: &Path) -> Result<NodePort, BpfError> {
        std::fs::create_dir_all(dir).map_err(|source| BpfError::Io {
            op: "create",
            path: dir.into(),
            source,
        })?;
        let mut obj = EbpfLoader::new()
            .default_map_pin_directory(dir)
            .load(OBJECT)
            .map_err(|e| BpfError::Load {
                name: "tc_nodeport4",
                source: Box::new(e),
            })?;
        for name in [PROG_IN, PROG_OUT] {
            let prog: &mut SchedClassifier = obj
                .program_mut(name)
                .ok_or_else(|| BpfError::Program {
                    name,
                    msg: "not in its object".into(),
                })?
                .try_into()
                .map_err(prog_err(name))?;
            prog.load().map_err(prog_err(name))?;
        }
        let mut take = |name: &'static str| {
            obj.take_map(name).ok_or(BpfError::Map {
                name,
                msg: "not in the object".into(),
            })
        };
        let nodeport = HashMap::try_from(take("netd_lb4_nodeport")?).map_err(map_err("netd_lb4_nodeport"))?;
        let maglev = take("netd_lb4_maglev")?;
        let maglev_fd = match &maglev {
            aya::maps::Map::HashMap(d) => d.fd().as_fd().try_clone_to_owned().map_err(|e| BpfError::Map {
                name: "netd_lb4_maglev",
                msg: format!("dup its fd: {e}"),
            })?,
            _ => {
                return Err(BpfError::Map {
                    name: "netd_lb4_maglev",
                    msg: "not a hash map".into(),
                })
            }
        };
        let maglev = HashMap::try_from(maglev).map_err(map_err("netd_lb4_maglev"))?;
        Ok(NodePort {
            dir: dir.into(),
            obj,
            nodeport,
            maglev,
            maglev_fd,
        })
    }

    fn prog(&mut self, d: TcDir) -> Result<&mut SchedClassifier, BpfError> {
        let name = d.program();
        self.obj
            .program_mut(name)
            .ok_or_else(|| BpfError::Program {
                name,
                msg: "not in its object".into(),
            })?
            .try_into()
            .map_err(prog_err(name))
    }

    fn link_pin(&self, dev: &str, ifindex: u32, d: TcDir) -> PathBuf {
        self.dir.join(format!("tcx_{dev}_{ifindex}_{}", d.tag()))
    }

    /// Attaches both programs to `dev` (ingress and egress) unless their pinned links
    /// are there already. tcx when the kernel has it, else clsact.
    pub fn attach(&mut self, dev: &str) -> Result<(), BpfError> {
        let ifindex = ifindex(dev)?;
        for d in [TcDir::Ingress, TcDir::Egress] {
            let pin = self.link_pin(dev, ifindex, d);
            if PinnedLink::from_pin(&pin).is_ok() {
                continue;
            }
            let _ = std::fs::remove_file(&pin);
            let name = d.program();
            let prog = self.prog(d)?;
            match prog.attach_with_options(
                dev,
                d.attach_type(),
                TcAttachOptions::TcxOrder(LinkOrder::default()),
            ) {
                Ok(id) => {
                    let link = prog.take_link(id).map_err(prog_err(name))?;
                    let fd: FdLink =
                        link.try_into()
                            .map_err(|e: aya::programs::links::LinkError| BpfError::Program {
                                name,
                                msg: e.to_string(),
                            })?;
                    fd.pin(&pin).map_err(|e| BpfError::Program {
                        name,
                        msg: format!("pin link {}: {e}", pin.display()),
                    })?;
                }
                // No tcx (Linux < 6.6): the qdisc way. The filter stays until `detach`.
                Err(tcx) => {
                    let _ = tc::qdisc_add_clsact(dev); // EEXIST: already there
                    let _ = tc::qdisc_detach_program(dev, d.attach_type(), name);
                    let id = prog
                        .attach_with_options(
                            dev,
                            d.attach_type(),
                            TcAttachOptions::Netlink(Default::default()),
                        )
                        .map_err(|e| BpfError::Program {
                            name,
                            msg: format!(
                                "attach to {dev}: tcx: {}; clsact: {}",
                                super::bpf::chain(&tcx),
                                super::bpf::chain(&e)
                            ),
                        })?;
                    // Keep the filter when this object is dropped.
                    let link = prog.take_link(id).map_err(prog_err(name))?;
                    std::mem::forget(link);
                }
            }
        }
        Ok(())
    }

    /// Detaches from every device whose pinned links are not in `keep` (device names):
    /// the devices netd no longer serves. Returns the devices detached.
    pub fn prune(&self, keep: &[String]) -> Vec<String> {
        let mut gone = Vec::new();
        let Ok(rd) = std::fs::read_dir(&self.dir) else {
            return gone;
        };
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(rest) = name.strip_prefix("tcx_") else {
                continue;
            };
            // tcx_<dev>_<ifindex>_<in|out>; device names may hold '_'.
            let mut parts = rest.rsplitn(3, '_');
            let (Some(_dir), Some(idx), Some(dev)) = (parts.next(), parts.next(), parts.next()) else {
                continue;
            };
            let current = ifindex(dev).ok().map(|i| i.to_string());
            if !keep.iter().any(|k| k == dev) || current.as_deref() != Some(idx) {
                let _ = std::fs::remove_file(e.path());
                if !gone.iter().any(|g| g == dev) {
                    gone.push(dev.to_string());
                }
            }
        }
        gone
    }

    /// Runs one program on `packet` (an Ethernet frame) with BPF_PROG_TEST_RUN, in the
    /// calling thread's network namespace (the route lookup's): the program's return
    /// code (TC_ACT_*), the packet as it left and the skb mark it left with.
    pub fn test_run(&mut self, d: TcDir, packet: &[u8]) -> Result<TcRun, BpfError> {
        // `struct __sk_buff` is 192 bytes since Linux 5.16; zeros are a valid context.
        const SKB_CTX: usize = 192;
        const MARK_OFF: usize = 8;
        let name = d.program();
        let prog = self.prog(d)?;
        let mut out = vec![0u8; packet.len() + 256];
        let ctx_in = [0u8; SKB_CTX];
        let mut ctx_out = [0u8; SKB_CTX];
        let r = prog
            .test_run(TestRunOptions {
                data_in: Some(packet),
                data_out: Some(&mut out),
                ctx_in: Some(&ctx_in),
                ctx_out: Some(&mut ctx_out),
                ..TestRunOptions::default()
            })
            .map_err(prog_err(name))?;
        out.truncate(r.data_size_out as usize);
        let mut mark = [0u8; 4];
        mark.copy_from_slice(&ctx_out[MARK_OFF..MARK_OFF + 4]);
        Ok(TcRun {
            verdict: r.return_value,
            packet: out,
            mark: u32::from_ne_bytes(mark),
        })
    }
}

/// What one BPF_PROG_TEST_RUN of a tc program gave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcRun {
    /// TC_ACT_OK (0), TC_ACT_SHOT (2), ...
    pub verdict: u32,
    pub packet: Vec<u8>,
    pub mark: u32,
}

/// Removes the clsact filters of the mesh from `dev` (a kernel without tcx); tcx links
/// go with their pins (`kernel::bpf::remove_pins`).
pub fn detach_clsact(dev: &str) {
    for d in [TcDir::Ingress, TcDir::Egress] {
        let _ = tc::qdisc_detach_program(dev, d.attach_type(), d.program());
    }
}

fn ifindex(dev: &str) -> Result<u32, BpfError> {
    nix::net::if_::if_nametoindex(dev).map_err(|e| BpfError::Io {
        op: "find device",
        path: dev.into(),
        source: e.into(),
    })
}

impl NpMaps for NodePort {
    fn dump(&self) -> Result<NpTables, BpfError> {
        let mut t = NpTables::default();
        for kv in self.nodeport.iter() {
            let (k, v) = kv.map_err(map_err("netd_lb4_nodeport"))?;
            t.services.insert(k, v);
        }
        // Tables sized by their service (a table no service names is sized by its
        // highest slot, so the plan can delete it).
        let sizes: BTreeMap<u32, u32> = t.services.values().map(|s| (s.maglev_id, s.table_size)).collect();
        for kv in self.maglev.iter() {
            let (k, v) = kv.map_err(map_err("netd_lb4_maglev"))?;
            let want = sizes.get(&k.maglev_id).copied().unwrap_or(0).max(k.slot + 1) as usize;
            let tab = t.tables.entry(k.maglev_id).or_default();
            if tab.len() < want {
                tab.resize(want, Lb4Flow::default());
            }
            tab[k.slot as usize] = v;
        }
        Ok(t)
    }

    fn apply(&mut self, ops: &[NpOp]) -> Result<(), BpfError> {
        for op in ops {
            match op {
                NpOp::PutSlots(id, slots) => {
                    let keys: Vec<Lb4MaglevKey> = slots
                        .iter()
                        .map(|(slot, _)| Lb4MaglevKey {
                            maglev_id: *id,
                            slot: *slot,
                        })
                        .collect();
                    let values: Vec<Lb4Flow> = slots.iter().map(|(_, be)| *be).collect();
                    let done = update_batch(&self.maglev_fd, &keys, &values).map_err(|e| BpfError::Map {
                        name: "netd_lb4_maglev",
                        msg: format!("BPF_MAP_UPDATE_BATCH of {} slots: {e}", keys.len()),
                    })?;
                    // A kernel that refuses batches for the map gets one call per slot.
                    for (k, v) in keys.iter().zip(&values).skip(done) {
                        self.maglev.insert(k, v, 0).map_err(map_err("netd_lb4_maglev"))?;
                    }
                }
                NpOp::DelSlots(id, range) => {
                    for slot in range.clone() {
                        let k = Lb4MaglevKey { maglev_id: *id, slot };
                        gone(self.maglev.remove(&k)).map_err(map_err("netd_lb4_maglev"))?;
                    }
                }
                NpOp::PutService(k, v) => self
                    .nodeport
                    .insert(k, v, 0)
                    .map_err(map_err("netd_lb4_nodeport"))?,
                NpOp::DelService(k) => gone(self.nodeport.remove(k)).map_err(map_err("netd_lb4_nodeport"))?,
            }
        }
        Ok(())
    }

    fn attach_to(&mut self, dev: &str) -> Result<(), BpfError> {
        self.attach(dev)
    }

    fn detach_others(&mut self, keep: &[String]) -> Vec<String> {
        self.prune(keep)
    }
}
