//! netd: kernel-level container networking.
//!
//! Layers, from pure to impure: `model` (plain data + validation), `ipam` (address
//! allocation over plain data), `driver` (model -> kernel `plan::Step`s), `firewall`
//! (desired nftables ruleset from the model), `store` (persistence), `kernel` (every
//! syscall, netlink message and nftables batch), `engine` (orchestrates one operation:
//! plan, apply, undo on failure, persist), `api` (HTTP/JSON over a unix socket) and
//! `stack` (`netd up`); `observe` (events and metrics) and `graph` (the picture) watch them.

pub mod api;
pub mod cluster;
pub mod daemon;
pub mod dns;
pub mod driver;
pub mod engine;
pub mod firewall;
pub mod graph;
pub mod ipam;
pub mod k8s;
pub mod kernel;
pub mod lb;
pub mod model;
pub mod observe;
pub mod plan;
pub mod stack;
pub mod store;
pub mod wireguard;
