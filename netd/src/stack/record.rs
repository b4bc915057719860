//! What the daemon cannot keep for a stack: the processes it started (responders), in
//! `<state dir>/stacks/<stack>.json`. Written after each responder starts (a `kill -9`
//! of `netd up` loses at most the one being started), read by the next `netd up`,
//! `netd ps` and `netd down`, which signal only the processes recorded here.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::diff::ResponderSpec;
use crate::kernel::process::ProcId;

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct Record {
    pub responders: Vec<Responder>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Responder {
    pub sandbox: String,
    #[serde(flatten)]
    pub proc: ProcId,
    pub tcp: Vec<u16>,
    pub udp: Vec<u16>,
}

impl Responder {
    pub fn spec(&self) -> ResponderSpec {
        ResponderSpec {
            sandbox: self.sandbox.clone(),
            tcp: self.tcp.clone(),
            udp: self.udp.clone(),
        }
    }
}

/// The record file of stack `name` under `state_dir`.
pub fn path(state_dir: &Path, name: &str) -> PathBuf {
    state_dir.join("stacks").join(format!("{name}.json"))
}

/// The stacks that have a record (some of them may have no objects left).
pub fn names(state_dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(state_dir.join("stacks"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.strip_suffix(".json").map(str::to_string))
        .collect();
    v.sort();
    v
}

impl Record {
    /// The record, or an empty one when there is none (or it cannot be read: the
    /// processes it named are then unknown, and are left alone).
    pub fn load(file: &Path) -> Record {
        std::fs::read(file)
            .ok()
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default()
    }

    /// Writes it (atomically: a reader never sees half a file); an empty record
    /// removes the file.
    pub fn save(&self, file: &Path) -> std::io::Result<()> {
        if self.responders.is_empty() {
            return match std::fs::remove_file(file) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            };
        }
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = file.with_extension("json.tmp");
        std::fs::write(
            &tmp,
            serde_json::to_vec_pretty(self).map_err(std::io::Error::other)?,
        )?;
        std::fs::rename(&tmp, file)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_empty_removes_the_file() {
        let dir = std::env::temp_dir().join(format!("netd-record-{}", std::process::id()));
        let f = path(&dir, "demo");
        let r = Record {
            responders: vec![Responder {
                sandbox: "web".into(),
                proc: ProcId { pid: 7, start: 9 },
                tcp: vec![80],
                udp: vec![],
            }],
        };
        r.save(&f).unwrap();
        assert_eq!(Record::load(&f), r);
        assert_eq!(names(&dir), ["demo"]);
        Record::default().save(&f).unwrap();
        assert!(!f.exists());
        assert_eq!(Record::load(&f), Record::default());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
