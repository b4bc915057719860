//! In-memory store for unit tests.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::{Bucket, Op, Store, StoreError, Txn};

#[derive(Default)]
pub struct MemStore {
    data: Mutex<BTreeMap<(Bucket, String), Vec<u8>>>,
}

impl Store for MemStore {
    fn list(&self, bucket: Bucket) -> Result<Vec<(String, Vec<u8>)>, StoreError> {
        let d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        Ok(d.iter()
            .filter(|((b, _), _)| *b == bucket)
            .map(|((_, k), v)| (k.clone(), v.clone()))
            .collect())
    }

    fn commit_undoable(&self, txn: &Txn) -> Result<Txn, StoreError> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        let mut undo = Txn::new();
        for op in &txn.ops {
            match op {
                Op::Put { bucket, key, value } => {
                    let old = d.insert((*bucket, key.clone()), value.clone());
                    undo.restore(*bucket, key, old);
                }
                Op::Delete { bucket, key } => {
                    let old = d.remove(&(*bucket, key.clone()));
                    undo.restore(*bucket, key, old);
                }
            }
        }
        Ok(undo.into_undo())
    }
}
