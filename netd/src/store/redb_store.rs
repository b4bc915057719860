//! The embedded default: one redb file, one table per bucket, JSON values (readable with
//! any redb tool and the same documents an etcd store would hold).

use std::path::Path;

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{Bucket, Op, Store, StoreError, Txn};

fn table(b: Bucket) -> TableDefinition<'static, &'static str, &'static [u8]> {
    TableDefinition::new(b.name())
}

pub struct RedbStore {
    db: Database,
}

fn io(op: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::Io {
        op: op.into(),
        msg: e.to_string(),
    }
}

impl RedbStore {
    pub fn open(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        // Create every table once so reads never meet a missing table.
        let tx = db.begin_write().map_err(|e| io("begin", e))?;
        for b in Bucket::ALL {
            tx.open_table(table(b)).map_err(|e| io("open table", e))?;
        }
        tx.commit().map_err(|e| io("commit", e))?;
        Ok(RedbStore { db })
    }

    /// Like `open`, but without a write transaction (two fsyncs) when every table is
    /// already there: for short-lived processes that open the store once per operation.
    pub fn open_quick(path: &Path) -> Result<RedbStore, StoreError> {
        let db = Database::create(path).map_err(|e| StoreError::Open {
            path: path.display().to_string(),
            msg: e.to_string(),
        })?;
        let complete = db
            .begin_read()
            .is_ok_and(|tx| Bucket::ALL.iter().all(|b| tx.open_table(table(*b)).is_ok()));
        if complete {
            return Ok(RedbStore { db });
        }
        drop(db);
        RedbStore::open(path)
    }
}

impl Store for RedbStore {
    fn list(&self, bucket: Bucket) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let tx = self.db.begin_read().map_err(|e| io("begin read", e))?;
        let t = tx.open_table(table(bucket)).map_err(|e| io("open table", e))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(|e| io("iter", e))? {
            let (k, v) = item.map_err(|e| io("read", e))?;
            out.push((k.value().to_string(), v.value().to_vec()));
        }
        Ok(out)
    }

    fn commit_undoable(&self, txn: &Txn) -> Result<Txn, StoreError> {
        let mut undo = Txn::new();
        if txn.is_empty() {
            return Ok(undo);
        }
        let tx = self.db.begin_write().map_err(|e| io("begin write", e))?;
        for op in &txn.ops {
            // Both answer the value they replaced.
            let (bucket, key, old) = match op {
                Op::Put { bucket, key, value } => {
                    let mut t = tx.open_table(table(*bucket)).map_err(|e| io("open table", e))?;
                    let old = t
                        .insert(key.as_str(), value.as_slice())
                        .map_err(|e| io("insert", e))?
                        .map(|g| g.value().to_vec());
                    (*bucket, key, old)
                }
                Op::Delete { bucket, key } => {
                    let mut t = tx.open_table(table(*bucket)).map_err(|e| io("open table", e))?;
                    let old = t
                        .remove(key.as_str())
                        .map_err(|e| io("remove", e))?
                        .map(|g| g.value().to_vec());
                    (*bucket, key, old)
                }
            };
            undo.restore(bucket, key, old);
        }
        tx.commit().map_err(|e| io("commit", e))?;
        Ok(undo.into_undo())
    }
}
