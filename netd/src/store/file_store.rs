//! One JSON file, rewritten whole on every commit: the store of short-lived processes (the
//! CNI plugin's standalone mode, one process per ADD/DEL).
//!
//! redb suits the daemon, which opens its file once. A process that opens it for a single
//! transaction pays for redb's recovery flag on top of the commit: one fsync to open and
//! three to four to close (measured with strace: seven per CNI ADD in all). Here opening
//! is one read and closing is nothing; a commit writes `<file>.tmp`, syncs it, renames it
//! over the file and syncs the directory, so it is atomic (a `kill -9` at any point leaves
//! the old or the new state, never a mix) and durable once `commit` returns, like redb's.
//! Rewriting the whole file is fine at this size (a few hundred bytes per container).
//!
//! One writer at a time: the caller serialises processes (the plugin's `flock`); readers in
//! other processes always see a whole file, thanks to the rename.
//!
//! Both syncs stay even though the CNI plugin's state describes only what a reboot wipes:
//! without them a power loss on a filesystem that does not flush a file renamed over
//! another (ext4's `auto_da_alloc` does, others need not) could leave a torn file, and a
//! store that cannot be read refuses every later ADD. They cost about 1 ms per exec here.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::Value;

use super::{Bucket, Op, Store, StoreError, Txn};

/// bucket name -> key -> document.
type Data = BTreeMap<String, BTreeMap<String, Value>>;

pub struct FileStore {
    path: PathBuf,
    data: Mutex<Data>,
}

fn io(op: &str, p: &Path, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        op: format!("{op} {}", p.display()),
        msg: e.to_string(),
    }
}

impl FileStore {
    /// Reads the file; a missing file is an empty store (created by the first commit).
    pub fn open(path: &Path) -> Result<FileStore, StoreError> {
        let data = match fs::read(path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|e| StoreError::Open {
                path: path.display().to_string(),
                msg: format!("not a netd store file: {e}"),
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Data::new(),
            Err(e) => {
                return Err(StoreError::Open {
                    path: path.display().to_string(),
                    msg: e.to_string(),
                })
            }
        };
        Ok(FileStore {
            path: path.to_path_buf(),
            data: Mutex::new(data),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes `data` in place of the file: temp file, sync, rename, sync the directory.
    fn persist(&self, data: &Data) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(data).map_err(|e| io("encode", &self.path, e))?;
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut f = File::create(&tmp).map_err(|e| io("create", &tmp, e))?;
        f.write_all(&bytes).map_err(|e| io("write", &tmp, e))?;
        f.sync_data().map_err(|e| io("sync", &tmp, e))?;
        drop(f);
        fs::rename(&tmp, &self.path).map_err(|e| io("rename", &tmp, e))?;
        // The rename itself is durable only once the directory is.
        let dir = self
            .path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync", dir, e))
    }
}

impl Store for FileStore {
    fn list(&self, bucket: Bucket) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(d.get(bucket.name())
            .into_iter()
            .flatten()
            .map(|(k, v)| (k.clone(), serde_json::to_vec(v).unwrap_or_default()))
            .collect())
    }

    fn commit(&self, txn: &Txn) -> Result<(), StoreError> {
        if txn.is_empty() {
            return Ok(());
        }
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut next = d.clone();
        for op in &txn.ops {
            match op {
                Op::Put { bucket, key, value } => {
                    let v: Value = serde_json::from_slice(value).map_err(|e| StoreError::Io {
                        op: format!("put {}/{key}", bucket.name()),
                        msg: format!("value is not JSON: {e}"),
                    })?;
                    next.entry(bucket.name().to_string())
                        .or_default()
                        .insert(key.clone(), v);
                }
                Op::Delete { bucket, key } => {
                    if let Some(b) = next.get_mut(bucket.name()) {
                        b.remove(key);
                    }
                }
            }
        }
        self.persist(&next)?;
        *d = next;
        Ok(())
    }
}
