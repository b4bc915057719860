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

    fn commit(&self, txn: &Txn) -> Result<(), StoreError> {
        let mut d = self.data.lock().unwrap_or_else(|e| e.into_inner());
        for op in &txn.ops {
            match op {
                Op::Put { bucket, key, value } => {
                    d.insert((*bucket, key.clone()), value.clone());
                }
                Op::Delete { bucket, key } => {
                    d.remove(&(*bucket, key.clone()));
                }
            }
        }
        Ok(())
    }
}
