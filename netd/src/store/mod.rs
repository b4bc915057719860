//! Persistence. The daemon keeps its desired state (networks, sandboxes, address pools)
//! in a `Store`: a few named buckets of JSON documents, changed only through atomic
//! transactions. `RedbStore` (embedded, one file in the state dir) is the default;
//! `MemStore` serves unit tests. The trait is small on purpose so an etcd store (one key
//! prefix per bucket, a txn per commit) can implement it for hosts that share an overlay.

pub mod etcd;
mod file_store;
mod mem;
mod redb_store;

pub use file_store::FileStore;
pub use mem::MemStore;
pub use redb_store::RedbStore;

use serde::de::DeserializeOwned;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Bucket {
    Networks,
    Sandboxes,
    Pools,
    /// Operations under way: written before a kernel change that reconcile cannot
    /// otherwise attribute (a new namespace), removed with the operation's final commit.
    Pending,
    /// Services (`model::Service`), keyed `<namespace>/<name>`.
    Services,
}

impl Bucket {
    pub const ALL: [Bucket; 5] = [
        Bucket::Networks,
        Bucket::Sandboxes,
        Bucket::Pools,
        Bucket::Pending,
        Bucket::Services,
    ];
    pub fn name(self) -> &'static str {
        match self {
            Bucket::Networks => "networks",
            Bucket::Sandboxes => "sandboxes",
            Bucket::Pools => "pools",
            Bucket::Pending => "pending",
            Bucket::Services => "services",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {msg}")]
    Open { path: String, msg: String },
    #[error("store {op}: {msg}")]
    Io { op: String, msg: String },
    #[error("store: bad record {bucket}/{key}: {msg}")]
    Decode {
        bucket: &'static str,
        key: String,
        msg: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put {
        bucket: Bucket,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        bucket: Bucket,
        key: String,
    },
}

/// A set of changes committed all together or not at all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub ops: Vec<Op>,
}

impl Txn {
    pub fn new() -> Txn {
        Txn::default()
    }
    pub fn put<T: Serialize>(&mut self, bucket: Bucket, key: &str, value: &T) -> &mut Self {
        // Serializing our own plain structs to JSON cannot fail (no maps with non-string keys).
        let value = serde_json::to_vec(value).unwrap_or_default();
        self.ops.push(Op::Put {
            bucket,
            key: key.to_string(),
            value,
        });
        self
    }
    pub fn delete(&mut self, bucket: Bucket, key: &str) -> &mut Self {
        self.ops.push(Op::Delete {
            bucket,
            key: key.to_string(),
        });
        self
    }
    pub fn is_empty(&self) -> bool {
        self.ops.is_empty()
    }

    /// Records, for the undo of a transaction, that `key` held `old` before it.
    fn restore(&mut self, bucket: Bucket, key: &str, old: Option<Vec<u8>>) {
        match old {
            Some(value) => self.ops.push(Op::Put {
                bucket,
                key: key.to_string(),
                value,
            }),
            None => {
                self.delete(bucket, key);
            }
        }
    }

    /// The undo's ops were recorded first to last; they apply last to first.
    fn into_undo(mut self) -> Txn {
        self.ops.reverse();
        self
    }
}

pub trait Store: Send + Sync {
    /// Every (key, value) of a bucket, ordered by key.
    fn list(&self, bucket: Bucket) -> Result<Vec<(String, Vec<u8>)>, StoreError>;
    /// Applies all ops atomically and durably (they survive `kill -9` and a power cut
    /// once this returns), and returns the transaction that undoes them: the earlier
    /// value of every key written, in reverse order.
    fn commit_undoable(&self, txn: &Txn) -> Result<Txn, StoreError>;
    /// `commit_undoable` without the undo.
    fn commit(&self, txn: &Txn) -> Result<(), StoreError> {
        self.commit_undoable(txn).map(drop)
    }
}

/// Decodes a whole bucket.
pub fn load<T: DeserializeOwned>(store: &dyn Store, bucket: Bucket) -> Result<Vec<(String, T)>, StoreError> {
    store
        .list(bucket)?
        .into_iter()
        .map(|(k, v)| {
            serde_json::from_slice(&v)
                .map(|t| (k.clone(), t))
                .map_err(|e| StoreError::Decode {
                    bucket: bucket.name(),
                    key: k,
                    msg: e.to_string(),
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The undo a commit returns restores every key, also one written twice.
    fn undo_restores(s: &dyn Store) {
        let mut t = Txn::new();
        t.put(Bucket::Pools, "kept", &1).put(Bucket::Pools, "changed", &2);
        s.commit(&t).unwrap();
        let before: Vec<_> = Bucket::ALL.iter().map(|b| s.list(*b).unwrap()).collect();
        let mut t = Txn::new();
        t.put(Bucket::Pools, "changed", &3)
            .put(Bucket::Pools, "changed", &4)
            .delete(Bucket::Pools, "kept")
            .put(Bucket::Sandboxes, "new", &"x")
            .delete(Bucket::Networks, "never-was");
        let undo = s.commit_undoable(&t).unwrap();
        assert_eq!(
            s.list(Bucket::Pools).unwrap(),
            vec![("changed".to_string(), b"4".to_vec())]
        );
        s.commit(&undo).unwrap();
        let after: Vec<_> = Bucket::ALL.iter().map(|b| s.list(*b).unwrap()).collect();
        assert_eq!(after, before);
    }

    fn roundtrip(s: &dyn Store) {
        let mut t = Txn::new();
        t.put(Bucket::Networks, "b", &"two")
            .put(Bucket::Networks, "a", &"one");
        t.put(Bucket::Pools, "a/4", &42u32);
        s.commit(&t).unwrap();
        let got: Vec<(String, String)> = load(s, Bucket::Networks).unwrap();
        assert_eq!(got, vec![("a".into(), "one".into()), ("b".into(), "two".into())]);
        let mut t = Txn::new();
        t.delete(Bucket::Networks, "a")
            .delete(Bucket::Networks, "missing");
        s.commit(&t).unwrap();
        assert_eq!(s.list(Bucket::Networks).unwrap().len(), 1);
        assert_eq!(s.list(Bucket::Pools).unwrap().len(), 1);
        assert!(s.list(Bucket::Pending).unwrap().is_empty());
    }

    #[test]
    fn mem_store_roundtrip() {
        roundtrip(&MemStore::default());
    }

    #[test]
    fn file_store_roundtrip_reopen_and_atomic_commit() {
        let dir = std::env::temp_dir().join(format!("netd-filestore-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.json");
        {
            let s = FileStore::open(&path).unwrap();
            roundtrip(&s);
            // A value that is not JSON fails the whole transaction and changes nothing.
            let mut t = Txn::new();
            t.put(Bucket::Pools, "b/4", &1u32);
            t.ops.push(Op::Put {
                bucket: Bucket::Pools,
                key: "c/4".into(),
                value: b"{not json".to_vec(),
            });
            assert!(s.commit(&t).is_err());
            assert_eq!(s.list(Bucket::Pools).unwrap().len(), 1);
        }
        let s = FileStore::open(&path).unwrap();
        assert_eq!(s.list(Bucket::Networks).unwrap().len(), 1);
        assert_eq!(s.list(Bucket::Pools).unwrap().len(), 1);
        let mut t = Txn::new();
        t.delete(Bucket::Pools, "a/4");
        s.commit(&t).unwrap();
        assert!(FileStore::open(&path)
            .unwrap()
            .list(Bucket::Pools)
            .unwrap()
            .is_empty());
        // Neither slot holding a whole commit is an error, not an empty store.
        std::fs::write(dir.join("state.json.0"), b"garbage").unwrap();
        std::fs::write(dir.join("state.json.1"), b"garbage").unwrap();
        assert!(FileStore::open(&path).is_err());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn redb_store_roundtrip_and_reopen() {
        let dir = std::env::temp_dir().join(format!("netd-store-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state.redb");
        {
            let s = RedbStore::open(&path).unwrap();
            roundtrip(&s);
        }
        let s = RedbStore::open(&path).unwrap();
        assert_eq!(s.list(Bucket::Networks).unwrap().len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn every_store_answers_an_undo_that_restores() {
        undo_restores(&MemStore::default());
        let dir = std::env::temp_dir().join(format!("netd-store-undo-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        undo_restores(&FileStore::open(&dir.join("state.json")).unwrap());
        undo_restores(&RedbStore::open(&dir.join("state.redb")).unwrap());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
