//! Every eBPF kernel call of the socket-level load balancer (`--lb ebpf`): mounting
//! bpffs, loading the programs of `ebpf/` (compiled by build.rs, embedded here) with
//! aya, attaching them to a cgroup v2, pinning what must outlive the daemon, writing
//! the maps, and reading a namespace's cookie.
//!
//! Pins live in `/sys/fs/bpf/netd/ns<inode>`, one directory per network namespace netd
//! runs in (the inode of that namespace): several daemons on one machine (one per host
//! namespace, as the integration tests run them) attach their own programs and keep
//! their own maps, and a restarted daemon finds its own. The cgroup links are pinned
//! too, so a kill -9 leaves the datapath running; removing the directory detaches it.
//!
//! The programs are attached through bpf_links (which run beside other programs) at the root of the cgroup v2
//! hierarchy: every socket of the machine passes them, whatever its namespace, and a
//! VIP is translated only for the namespace cookies netd wrote for its network.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use aya::maps::{HashMap, MapData};
use aya::programs::links::{CgroupAttachMode, FdLink, PinnedLink};
use aya::programs::CgroupSockAddr;
use aya::{include_bytes_aligned, Ebpf, EbpfLoader};

use super::bpf_types::*;

/// Where netd pins its eBPF objects (one subdirectory per network namespace).
pub const PIN_ROOT: &str = "/sys/fs/bpf/netd";
/// The cgroup v2 mount on a hybrid host (this project's machines); a pure cgroup v2 host
/// has it at /sys/fs/cgroup.
pub const CGROUP_CANDIDATES: &[&str] = &["/sys/fs/cgroup/unified", "/sys/fs/cgroup"];

const BPF_FS_MAGIC: i64 = 0xcafe4a11;
const CGROUP2_SUPER_MAGIC: i64 = 0x63677270;

/// The programs, one object per attach point, with their program names.
const OBJECTS: &[(&str, &[u8])] = &[
    (
        "netd_connect4",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/connect4.o")),
    ),
    (
        "netd_sendmsg4",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sendmsg4.o")),
    ),
    (
        "netd_recvmsg4",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recvmsg4.o")),
    ),
    (
        "netd_getpeer4",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/getpeername4.o")),
    ),
    (
        "netd_connect6",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/connect6.o")),
    ),
    (
        "netd_sendmsg6",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/sendmsg6.o")),
    ),
    (
        "netd_recvmsg6",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/recvmsg6.o")),
    ),
    (
        "netd_getpeer6",
        include_bytes_aligned!(concat!(env!("OUT_DIR"), "/getpeername6.o")),
    ),
];

#[derive(Debug, thiserror::Error)]
pub enum BpfError {
    #[error("--lb ebpf needs {what}: {path} {why}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        why: String,
    },
    #[error("mount bpffs on {path}: {source}")]
    Mount {
        path: PathBuf,
        #[source]
        source: nix::errno::Errno,
    },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("load eBPF object {name}: {source}")]
    Load {
        name: &'static str,
        #[source]
        source: Box<aya::EbpfError>,
    },
    #[error("eBPF program {name}: {msg}")]
    Program { name: &'static str, msg: String },
    #[error("eBPF map {name}: {msg}")]
    Map { name: &'static str, msg: String },
    #[error("netns cookie of {path}: {source}")]
    Cookie {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The pin directory of the namespace `netns` (a namespace file).
pub fn pin_dir_for(root: &Path, netns: &Path) -> std::io::Result<PathBuf> {
    let ino = std::fs::metadata(netns)?.ino();
    Ok(root.join(format!("ns{ino}")))
}

/// The first cgroup v2 mount of `CGROUP_CANDIDATES`.
pub fn default_cgroup() -> PathBuf {
    CGROUP_CANDIDATES
        .iter()
        .map(PathBuf::from)
        .find(|p| fs_magic(p) == Some(CGROUP2_SUPER_MAGIC))
        .unwrap_or_else(|| PathBuf::from(CGROUP_CANDIDATES[0]))
}

fn fs_magic(p: &Path) -> Option<i64> {
    nix::sys::statfs::statfs(p).ok().map(|s| s.filesystem_type().0)
}

/// The cookie the kernel gives the namespace `netns` (`bpf_get_netns_cookie` in the
/// programs): read with SO_NETNS_COOKIE on a socket made inside it. None: this one.
pub fn netns_cookie(netns: Option<&Path>) -> Result<u64, BpfError> {
    let path = netns
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "/proc/thread-self/ns/net".into());
    super::probe::in_netns(netns, || {
        // SAFETY: plain socket(2); the fd is owned at once.
        let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh socket nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut cookie: u64 = 0;
        let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
        // SAFETY: cookie and len are valid for the call's duration.
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_NETNS_COOKIE,
                (&mut cookie as *mut u64).cast(),
                &mut len,
            )
        };
        if r < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(cookie)
    })
    .map_err(|source| BpfError::Cookie { path, source })
}

/// What netd writes into one family's socket-LB maps, as plain data (`lb::ebpf_plan`
/// plans it): `Lb4Tables` for the IPv4 maps, `Lb6Tables` for the IPv6 ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LbTables<A> {
    pub services: BTreeMap<LbKey<A>, Lb4Service>,
    pub backends: BTreeMap<u32, LbBackend<A>>,
    pub reverse_nat: BTreeMap<u16, LbReverseNat<A>>,
    pub scope: BTreeSet<Lb4ScopeKey>,
}

impl<A> Default for LbTables<A> {
    fn default() -> LbTables<A> {
        LbTables {
            services: BTreeMap::new(),
            backends: BTreeMap::new(),
            reverse_nat: BTreeMap::new(),
            scope: BTreeSet::new(),
        }
    }
}

pub type Lb4Tables = LbTables<u32>;
pub type Lb6Tables = LbTables<[u32; 4]>;

/// One map write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbOp<A> {
    PutBackend(u32, LbBackend<A>),
    PutReverseNat(u16, LbReverseNat<A>),
    PutScope(Lb4ScopeKey),
    PutService(LbKey<A>, Lb4Service),
    DelService(LbKey<A>),
    DelScope(Lb4ScopeKey),
    DelReverseNat(u16),
    DelBackend(u32),
}

pub type Lb4Op = LbOp<u32>;
pub type Lb6Op = LbOp<[u32; 4]>;

/// One family's maps as `lb::ebpf` sees them: the real ones (`FamilyMaps`) or a fake in
/// tests.
pub trait LbMaps<A>: Send {
    fn dump(&self) -> Result<LbTables<A>, BpfError>;
    /// Applies `ops` in order; stops at the first failure (map writes have no
    /// transactions: the error names the write, the caller re-reads with `dump`).
    fn apply(&mut self, ops: &[LbOp<A>]) -> Result<(), BpfError>;
}

/// One family's pinned socket-LB maps, with their names for errors.
pub struct FamilyMaps<A> {
    names: [&'static str; 4],
    services: HashMap<MapData, LbKey<A>, Lb4Service>,
    backends: HashMap<MapData, u32, LbBackend<A>>,
    reverse_nat: HashMap<MapData, u16, LbReverseNat<A>>,
    scope: HashMap<MapData, Lb4ScopeKey, u8>,
}

/// The socket-LB programs, attached, and their maps.
pub struct SockLb {
    pub dir: PathBuf,
    pub v4: FamilyMaps<u32>,
    pub v6: FamilyMaps<[u32; 4]>,
}

/// An error and its sources on one line (aya's errors keep the errno in the source).
pub(crate) fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

pub(super) fn map_err(name: &'static str) -> impl Fn(aya::maps::MapError) -> BpfError {
    move |e| BpfError::Map { name, msg: chain(&e) }
}

pub(super) fn prog_err(name: &'static str) -> impl Fn(aya::programs::ProgramError) -> BpfError {
    move |e| BpfError::Program { name, msg: chain(&e) }
}

/// A delete of an entry already gone is success (teardown is idempotent).
pub(super) fn gone(r: Result<(), aya::maps::MapError>) -> Result<(), aya::maps::MapError> {
    match r {
        Err(aya::maps::MapError::KeyNotFound) => Ok(()),
        r => r,
    }
}

impl SockLb {
    /// Loads and attaches what is missing (a program whose pinned link exists is left
    /// running as it is) and opens the pinned maps. Fails with one line naming what the
    /// host lacks (a cgroup v2 at `cgroup`, bpffs).
    pub fn open(cgroup: &Path, root: &Path) -> Result<SockLb, BpfError> {
        if fs_magic(cgroup) != Some(CGROUP2_SUPER_MAGIC) {
            let why = if cgroup.exists() {
                "is not a cgroup v2 mount"
            } else {
                "does not exist"
            };
            return Err(BpfError::Missing {
                what: "a cgroup v2 hierarchy for cgroup/connect4",
                path: cgroup.into(),
                why: why.into(),
            });
        }
        let bpffs = Path::new("/sys/fs/bpf");
        if root.starts_with(bpffs) && fs_magic(bpffs) != Some(BPF_FS_MAGIC) {
            nix::mount::mount(
                Some("bpffs"),
                bpffs,
                Some("bpf"),
                nix::mount::MsFlags::empty(),
                None::<&str>,
            )
            .map_err(|source| BpfError::Mount {
                path: bpffs.into(),
                source,
            })?;
        }
        let dir =
            pin_dir_for(root, Path::new("/proc/thread-self/ns/net")).map_err(|source| BpfError::Io {
                op: "stat",
                path: "/proc/thread-self/ns/net".into(),
                source,
            })?;
        std::fs::create_dir_all(&dir).map_err(|source| BpfError::Io {
            op: "create",
            path: dir.clone(),
            source,
        })?;
        let cg = File::open(cgroup).map_err(|source| BpfError::Io {
            op: "open",
            path: cgroup.into(),
            source,
        })?;
        let mut objects: Vec<Ebpf> = Vec::new();
        for &(name, bytes) in OBJECTS {
            let mut obj = EbpfLoader::new()
                .default_map_pin_directory(&dir)
                .load(bytes)
                .map_err(|e| BpfError::Load {
                    name,
                    source: Box::new(e),
                })?;
            let link_pin = dir.join(format!("{name}_link"));
            if PinnedLink::from_pin(&link_pin).is_err() {
                let _ = std::fs::remove_file(&link_pin);
                let prog: &mut CgroupSockAddr = obj
                    .program_mut(name)
                    .ok_or_else(|| BpfError::Program {
                        name,
                        msg: "not in its object".into(),
                    })?
                    .try_into()
                    .map_err(prog_err(name))?;
                prog.load().map_err(prog_err(name))?;
                // A cgroup bpf_link always runs beside other programs (multi); the
                // kernel refuses BPF_F_ALLOW_MULTI in link_create (EINVAL), so the
                // mode whose flags are 0.
                let id = prog
                    .attach(&cg, CgroupAttachMode::Single)
                    .map_err(prog_err(name))?;
                let link = prog.take_link(id).map_err(prog_err(name))?;
                let fd: FdLink =
                    link.try_into()
                        .map_err(|e: aya::programs::links::LinkError| BpfError::Program {
                            name,
                            msg: e.to_string(),
                        })?;
                fd.pin(&link_pin).map_err(|e| BpfError::Program {
                    name,
                    msg: format!("pin link {}: {e}", link_pin.display()),
                })?;
            }
            objects.push(obj);
        }
        // Every object pins its maps by name in `dir`: the first object that has one
        // hands over the shared map.
        let mut take = |name: &'static str| {
            objects
                .iter_mut()
                .find_map(|o| o.take_map(name))
                .ok_or(BpfError::Map {
                    name,
                    msg: "not in the objects".into(),
                })
        };
        Ok(SockLb {
            v4: FamilyMaps::open(
                [
                    "netd_lb4_services",
                    "netd_lb4_backends",
                    "netd_lb4_reverse_nat",
                    "netd_lb4_scope",
                ],
                &mut take,
            )?,
            v6: FamilyMaps::open(
                [
                    "netd_lb6_services",
                    "netd_lb6_backends",
                    "netd_lb6_reverse_nat",
                    "netd_lb6_scope",
                ],
                &mut take,
            )?,
            dir,
        })
    }
}

impl<A: LbAddr> FamilyMaps<A> {
    /// The maps named `names` (services, backends, reverse NAT, scope), taken from the
    /// loaded objects.
    fn open(
        names: [&'static str; 4],
        take: &mut impl FnMut(&'static str) -> Result<aya::maps::Map, BpfError>,
    ) -> Result<FamilyMaps<A>, BpfError> {
        let [s, b, r, c] = names;
        Ok(FamilyMaps {
            names,
            services: HashMap::try_from(take(s)?).map_err(map_err(s))?,
            backends: HashMap::try_from(take(b)?).map_err(map_err(b))?,
            reverse_nat: HashMap::try_from(take(r)?).map_err(map_err(r))?,
            scope: HashMap::try_from(take(c)?).map_err(map_err(c))?,
        })
    }
}

/// Removes a pin directory: its links detach, its maps go with the last user.
pub fn remove_pins(dir: &Path) -> std::io::Result<()> {
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl<A: LbAddr> LbMaps<A> for FamilyMaps<A> {
    fn dump(&self) -> Result<LbTables<A>, BpfError> {
        let [sn, bn, rn, cn] = self.names;
        let mut t = LbTables::default();
        for kv in self.services.iter() {
            let (k, v) = kv.map_err(map_err(sn))?;
            t.services.insert(k, v);
        }
        for kv in self.backends.iter() {
            let (k, v) = kv.map_err(map_err(bn))?;
            t.backends.insert(k, v);
        }
        for kv in self.reverse_nat.iter() {
            let (k, v) = kv.map_err(map_err(rn))?;
            t.reverse_nat.insert(k, v);
        }
        for k in self.scope.keys() {
            t.scope.insert(k.map_err(map_err(cn))?);
        }
        Ok(t)
    }

    fn apply(&mut self, ops: &[LbOp<A>]) -> Result<(), BpfError> {
        let [sn, bn, rn, cn] = self.names;
        for op in ops {
            match op {
                LbOp::PutBackend(id, b) => self.backends.insert(id, b, 0).map_err(map_err(bn))?,
                LbOp::PutReverseNat(id, r) => self.reverse_nat.insert(id, r, 0).map_err(map_err(rn))?,
                LbOp::PutScope(k) => self.scope.insert(k, 1, 0).map_err(map_err(cn))?,
                LbOp::PutService(k, v) => self.services.insert(k, v, 0).map_err(map_err(sn))?,
                LbOp::DelService(k) => gone(self.services.remove(k)).map_err(map_err(sn))?,
                LbOp::DelScope(k) => gone(self.scope.remove(k)).map_err(map_err(cn))?,
                LbOp::DelReverseNat(id) => gone(self.reverse_nat.remove(id)).map_err(map_err(rn))?,
                LbOp::DelBackend(id) => gone(self.backends.remove(id)).map_err(map_err(bn))?,
            }
        }
        Ok(())
    }
}
