//! One JSON document holding every bucket, in two slot files used in turn: the store of
//! short-lived processes (the CNI plugin's standalone mode, one process per ADD/DEL).
//!
//! redb suits the daemon, which opens its file once. A process that opens it for a single
//! transaction pays for redb's recovery flag on top of the commit: one fsync to open and
//! three to four to close (measured with strace: seven per CNI ADD in all). Here opening
//! is two small reads and closing is nothing.
//!
//! # Commit: one `fdatasync`
//!
//! The state lives in `<path>.0` and `<path>.1`. Each slot is a header line
//! (`netd-store 1 <seq> <len> <fnv1a-64 of the document>`), the JSON document, then
//! padding. A commit writes the whole new state over the slot that does *not* hold the
//! newest one, in place, and `fdatasync`s it; `open` takes the valid slot with the
//! highest sequence number. So:
//! - atomic: a crash or power loss in the middle of a write leaves a slot whose checksum
//!   does not match, and `open` uses the other one, the previous commit, which was synced
//!   before that commit returned;
//! - durable once `commit` returns: the data is on disk, and no directory entry changed
//!   (the slot files exist already; the directory is synced once, when they are made);
//! - cheap: overwriting blocks of an existing file without changing its size needs no
//!   journal commit, only the data write and a cache flush. Slots grow in 4 KiB steps and
//!   never shrink, so the size changes only now and then. A temp file, synced, renamed
//!   and the directory synced costs two journal commits per exec instead.
//!
//! One writer at a time: the caller serialises processes (the plugin's `flock`). A reader
//! in another process that races a commit sees a torn slot and uses the other one, so it
//! always sees a whole state (the last or the one before).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::value::RawValue;

use super::{Bucket, Op, Store, StoreError, Txn};
use crate::model::fnv1a;

/// bucket name -> key -> document, kept as its JSON text: the store holds every
/// container of the node, and building `Value` trees of all of it on each open, then
/// turning them back into text for `list` and for each commit, cost ~2 ms per exec with
/// 100 containers.
type Data = BTreeMap<String, BTreeMap<String, Box<RawValue>>>;

const MAGIC: &str = "netd-store 1";
/// Slot files grow in steps of this many bytes (and never shrink).
const GROW: usize = 4096;

pub struct FileStore {
    path: PathBuf,
    inner: Mutex<Inner>,
}

struct Inner {
    data: Data,
    /// Sequence number of the newest commit, and the slot holding it (None: no slot yet).
    seq: u64,
    slot: Option<usize>,
}

fn io(op: &str, p: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        op: format!("{op} {}", p.display()),
        msg: e.to_string(),
    }
}

fn slot_path(path: &Path, i: usize) -> PathBuf {
    let mut p = path.to_path_buf().into_os_string();
    p.push(format!(".{i}"));
    PathBuf::from(p)
}

/// A slot's header (sequence number, checksum) and document, unchecked: the checksum
/// walks the whole document, so only the slot that is read gets it.
fn slot_parts(bytes: &[u8]) -> Option<(u64, u64, &[u8])> {
    let nl = bytes.iter().position(|b| *b == b'\n')?;
    let header = std::str::from_utf8(&bytes[..nl]).ok()?;
    let rest = header.strip_prefix(MAGIC)?;
    let mut f = rest.split_ascii_whitespace();
    let seq: u64 = f.next()?.parse().ok()?;
    let len: usize = f.next()?.parse().ok()?;
    let sum = u64::from_str_radix(f.next()?, 16).ok()?;
    let doc = bytes.get(nl + 1..nl + 1 + len)?;
    Some((seq, sum, doc))
}

/// A slot's sequence number and state, if it holds a whole commit.
#[cfg(test)]
fn parse_slot(bytes: &[u8]) -> Option<(u64, Data)> {
    let (seq, sum, doc) = slot_parts(bytes)?;
    if fnv1a(doc) != sum {
        return None;
    }
    Some((seq, serde_json::from_slice(doc).ok()?))
}

impl FileStore {
    /// Reads the newest whole commit; no file at all is an empty store (the slot files are
    /// created by the first commit).
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let open_err = |msg: String| StoreError::Open {
            path: path.display().to_string(),
            msg,
        };
        let mut slots = Vec::new();
        let mut seen = 0;
        for i in 0..2 {
            match fs::read(slot_path(path, i)) {
                Ok(b) => {
                    seen += 1;
                    slots.push((i, b));
                }
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(open_err(e.to_string())),
            }
        }
        // Only the newest whole commit is checked and decoded (the store holds every
        // container); the other slot only if that fails (a torn write).
        let mut docs: Vec<(u64, u64, usize, &[u8])> = slots
            .iter()
            .filter_map(|(i, b)| slot_parts(b).map(|(seq, sum, doc)| (seq, sum, *i, doc)))
            .collect();
        docs.sort_by_key(|d| std::cmp::Reverse(d.0));
        let best = docs.into_iter().find_map(|(seq, sum, i, doc)| {
            if fnv1a(doc) != sum {
                return None;
            }
            serde_json::from_slice::<Data>(doc).ok().map(|d| (seq, i, d))
        });
        let inner = match best {
            Some((seq, i, data)) => Inner {
                data,
                seq,
                slot: Some(i),
            },
            None if seen > 0 => {
                return Err(open_err("not a netd store: no slot holds a whole commit".into()))
            }
            None => Inner {
                data: Data::new(),
                seq: 0,
                slot: None,
            },
        };
        Ok(FileStore {
            path: path.to_path_buf(),
            inner: Mutex::new(inner),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Whether a store exists at `path` (one of its slot files does).
    pub fn exists(path: &Path) -> bool {
        slot_path(path, 0).exists() || slot_path(path, 1).exists()
    }

    /// Writes `data` as commit `seq` over slot `slot` and syncs it.
    fn persist(&self, data: &Data, seq: u64, slot: usize) -> Result<(), StoreError> {
        let doc = serde_json::to_vec(data).map_err(|e| io("encode", &self.path, e))?;
        let mut buf = format!("{MAGIC} {seq} {} {:016x}\n", doc.len(), fnv1a(&doc)).into_bytes();
        buf.extend_from_slice(&doc);
        buf.push(b'\n');
        let p = slot_path(&self.path, slot);
        let (f, created) = match OpenOptions::new().write(true).open(&p) {
            Ok(f) => (f, false),
            Err(e) if e.kind() == ErrorKind::NotFound => {
                let f = OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&p)
                    .map_err(|e| io("create", &p, e))?;
                (f, true)
            }
            Err(e) => return Err(io("open", &p, e)),
        };
        let have = f.metadata().map_err(|e| io("stat", &p, e))?.len() as usize;
        // Padding up to the file's size (or the next step): the size stays as it is, so
        // the sync below writes data only.
        let size = have.max(buf.len().div_ceil(GROW) * GROW);
        buf.resize(size, b'\n');
        f.write_all_at(&buf, 0).map_err(|e| io("write", &p, e))?;
        f.sync_data().map_err(|e| io("sync", &p, e))?;
        if created {
            // The new directory entry is durable only once the directory is.
            let dir = self
                .path
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
                .unwrap_or(Path::new("."));
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io("sync", dir, e))?;
        }
        Ok(())
    }
}

impl Store for FileStore {
    fn list(&self, bucket: Bucket) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        Ok(g.data
            .get(bucket.name())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), v.get().as_bytes().to_vec()))
            .collect())
    }

    fn commit_undoable(&self, txn: &Txn) -> Result<Txn, StoreError> {
        if txn.is_empty() {
            return Ok(Txn::new());
        }
        // Every value is checked before anything changes.
        let mut ops = Vec::with_capacity(txn.ops.len());
        for op in &txn.ops {
            ops.push(match op {
                Op::Put { bucket, key, value } => {
                    let text = String::from_utf8(value.clone()).map_err(|e| e.to_string());
                    let raw = text.and_then(|t| RawValue::from_string(t).map_err(|e| e.to_string()));
                    let raw = raw.map_err(|e| StoreError::Io {
                        op: format!("put {}/{key}", bucket.name()),
                        msg: format!("value is not JSON: {e}"),
                    })?;
                    (*bucket, key, Some(raw))
                }
                Op::Delete { bucket, key } => (*bucket, key, None),
            });
        }
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Applied in place; what they replaced is put back if the write fails.
        let mut undo = Vec::with_capacity(ops.len());
        for (bucket, key, v) in ops {
            let b = g.data.entry(bucket.name().to_string()).or_default();
            let old = match v {
                Some(v) => b.insert(key.clone(), v),
                None => b.remove(key),
            };
            undo.push((bucket, key, old));
        }
        // The slot that does not hold the newest commit.
        let slot = g.slot.map_or(0, |s| 1 - s);
        let seq = g.seq + 1;
        if let Err(e) = self.persist(&g.data, seq, slot) {
            for (bucket, key, old) in undo.into_iter().rev() {
                let b = g.data.entry(bucket.name().to_string()).or_default();
                match old {
                    Some(v) => b.insert(key.clone(), v),
                    None => b.remove(key),
                };
            }
            g.data.retain(|_, b| !b.is_empty());
            return Err(e);
        }
        g.seq = seq;
        g.slot = Some(slot);
        let mut back = Txn::new();
        for (bucket, key, old) in undo {
            back.restore(bucket, key, old.map(|v| v.get().as_bytes().to_vec()));
        }
        Ok(back.into_undo())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("netd-filestore-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    fn put(s: &FileStore, key: &str, v: u32) {
        let mut t = Txn::new();
        t.put(Bucket::Pools, key, &v);
        s.commit(&t).unwrap();
    }

    fn pools(path: &Path) -> Vec<String> {
        FileStore::open(path)
            .unwrap()
            .list(Bucket::Pools)
            .unwrap()
            .into_iter()
            .map(|(k, v)| format!("{k}={}", String::from_utf8(v).unwrap()))
            .collect()
    }

    #[test]
    fn a_torn_newest_slot_falls_back_to_the_commit_before() {
        let d = dir("torn");
        let path = d.join("s.json");
        let s = FileStore::open(&path).unwrap();
        put(&s, "a", 1); // seq 1, slot 0
        put(&s, "b", 2); // seq 2, slot 1
        assert_eq!(pools(&path), ["a=1", "b=2"]);
        // A write cut short: the header of the new commit, part of its document.
        let p1 = slot_path(&path, 1);
        let mut bytes = fs::read(&p1).unwrap();
        let nl = bytes.iter().position(|b| *b == b'\n').unwrap();
        bytes[nl + 5] ^= 0xff;
        fs::write(&p1, &bytes).unwrap();
        assert_eq!(pools(&path), ["a=1"]);
        // The next commit goes over the torn slot, never over the one still valid.
        let s = FileStore::open(&path).unwrap();
        put(&s, "c", 3);
        assert_eq!(pools(&path), ["a=1", "c=3"]);
        let _ = fs::remove_dir_all(&d);
    }

    #[test]
    fn slots_keep_their_size_and_alternate() {
        let d = dir("alt");
        let path = d.join("s.json");
        let s = FileStore::open(&path).unwrap();
        for i in 0..5 {
            put(&s, &format!("k{i}"), i);
        }
        let (a, b) = (slot_path(&path, 0), slot_path(&path, 1));
        assert_eq!(fs::metadata(&a).unwrap().len() % GROW as u64, 0);
        // seq 5 is in slot 0 (commits 1, 3, 5), seq 4 in slot 1.
        assert_eq!(parse_slot(&fs::read(&a).unwrap()).unwrap().0, 5);
        assert_eq!(parse_slot(&fs::read(&b).unwrap()).unwrap().0, 4);
        let mut t = Txn::new();
        for i in 0..5 {
            t.delete(Bucket::Pools, &format!("k{i}"));
        }
        s.commit(&t).unwrap();
        assert_eq!(fs::metadata(&b).unwrap().len() % GROW as u64, 0);
        assert!(pools(&path).is_empty());
        let _ = fs::remove_dir_all(&d);
    }
}
