//! The IPVS table of `FakeKernel`: services and destinations in memory with the
//! kernel's answers (EEXIST on a second add, ESRCH/ENOENT for what is missing), a log of
//! every change in `ipvsadm` words, connection counts a test sets, and a failure a test
//! injects at the n-th change.

use std::net::SocketAddr;

use super::ipvs::{Applied, Dest, Failure, IpvsError, Op, Service, ServiceKey};

#[derive(Debug, Default)]
pub(super) struct FakeIpvs {
    pub table: Vec<(Service, Vec<Dest>)>,
    /// Every change carried out, as `Op`'s Display (`-A tcp 10.0.0.1:80 rr`).
    pub log: Vec<String>,
    pub setup: bool,
    /// Fail the change with this index (counted over all changes ever applied), once.
    pub fail_at: Option<usize>,
    applied: usize,
}

impl FakeIpvs {
    fn service(&mut self, key: &ServiceKey) -> Option<&mut (Service, Vec<Dest>)> {
        self.table.iter_mut().find(|(s, _)| s.key == *key)
    }

    pub fn dests(&self, key: &ServiceKey) -> Vec<Dest> {
        self.table
            .iter()
            .find(|(s, _)| s.key == *key)
            .map(|(_, d)| d.clone())
            .unwrap_or_default()
    }

    /// Connections of a destination, as the kernel would count them.
    pub fn set_conns(&mut self, key: &ServiceKey, dest: SocketAddr, active: u32, inactive: u32) {
        if let Some((_, ds)) = self.service(key) {
            for d in ds.iter_mut().filter(|d| d.addr == dest) {
                d.active_conns = active;
                d.inactive_conns = inactive;
            }
        }
    }

    pub fn apply(&mut self, ops: &[Op]) -> Result<(), Applied> {
        for (done, op) in ops.iter().enumerate() {
            let fail = |source| Applied {
                done,
                total: ops.len(),
                source,
            };
            if self.fail_at == Some(self.applied) {
                self.fail_at = None; // once
                let e = IpvsError::ListServices(Failure::Decode("injected failure".into()));
                return Err(fail(e));
            }
            self.one(op).map_err(fail)?;
            self.applied += 1;
            self.log.push(op.to_string());
        }
        Ok(())
    }

    fn one(&mut self, op: &Op) -> Result<(), IpvsError> {
        let nf = Failure::NotFound;
        match op {
            Op::AddService(s) => {
                if self.service(&s.key).is_some() {
                    return Err(IpvsError::AddService {
                        key: s.key,
                        source: Failure::Exists,
                    });
                }
                self.table.push((s.clone(), Vec::new()));
            }
            Op::SetService(s) => match self.service(&s.key) {
                Some((old, _)) => *old = s.clone(),
                None => {
                    return Err(IpvsError::SetService {
                        key: s.key,
                        source: nf,
                    })
                }
            },
            Op::DelService(key) => {
                if self.service(key).is_none() {
                    return Err(IpvsError::DelService {
                        key: *key,
                        source: nf,
                    });
                }
                self.table.retain(|(s, _)| s.key != *key);
            }
            Op::AddDest(key, d) | Op::SetDest(key, d) => {
                let adding = matches!(op, Op::AddDest(..));
                let err = |source| match adding {
                    true => IpvsError::AddDest {
                        key: *key,
                        dest: d.addr,
                        source,
                    },
                    false => IpvsError::SetDest {
                        key: *key,
                        dest: d.addr,
                        source,
                    },
                };
                let Some((_, ds)) = self.service(key) else {
                    return Err(err(Failure::NotFound));
                };
                let at = ds.iter().position(|x| x.addr == d.addr);
                match (adding, at) {
                    (true, Some(_)) => return Err(err(Failure::Exists)),
                    (true, None) => ds.push(Dest {
                        active_conns: 0,
                        inactive_conns: 0,
                        ..d.clone()
                    }),
                    (false, None) => return Err(err(Failure::NotFound)),
                    (false, Some(i)) => {
                        let x = &mut ds[i];
                        (x.weight, x.forward) = (d.weight, d.forward);
                        (x.upper_threshold, x.lower_threshold) = (d.upper_threshold, d.lower_threshold);
                    }
                }
            }
            Op::DelDest(key, addr) => {
                let err = |source| IpvsError::DelDest {
                    key: *key,
                    dest: *addr,
                    source,
                };
                let Some((_, ds)) = self.service(key) else {
                    return Err(err(Failure::NotFound));
                };
                let n = ds.len();
                ds.retain(|d| d.addr != *addr);
                if ds.len() == n {
                    return Err(err(Failure::NotFound));
                }
            }
        }
        Ok(())
    }
}
