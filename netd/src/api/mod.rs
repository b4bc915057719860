//! The local API: HTTP/1.1 + JSON over a unix socket (no TCP listener: whoever can open
//! the socket administers the host's network, so access is the socket file's mode).
//!
//! `server` runs it (`serve(listener, engine, shutdown)`), `client` is the small blocking
//! client `netctl` and tests use, and `types` holds the request bodies both share.

pub mod client;
pub mod docker_plugin;
pub mod server;
pub mod types;

/// Largest request body accepted; larger ones get 413 with a JSON message.
pub const MAX_BODY: usize = 1 << 20;
