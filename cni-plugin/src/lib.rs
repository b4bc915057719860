//! netd-cni: a CNI 1.1 plugin on netd's core.
//!
//! `conf` and `env` parse what the runtime hands over (pure, property-tested), `ops`
//! implements ADD/DEL/CHECK/GC/STATUS over the `backend::Netd` trait, `result` builds the
//! answer in the requested spec version, `run` ties them to stdin/stdout and exit codes.
//! Delegating mode (`"socket"` in the config) talks to a running netd; standalone mode
//! runs netd's engine in-process on its own state dir.

pub mod backend;
pub mod conf;
pub mod delegated_ipam;
pub mod env;
pub mod error;
pub mod ops;
pub mod result;
pub mod run;
pub mod version;
