//! The session's behaviours, one file per theme; each test names the behaviour it pins.

mod backend_death;
mod cluster_redirects;
mod primary_order;
mod split_pipeline;

use crate::config::{Config, ReadConsistency};
use crate::router::slot::key_slot;

/// The defaults, with reads going to replicas whatever the client wrote before (read-your-writes
/// would send them to the master after a write, which is a test of its own): each reply then
/// names the server the proxy chose by the command alone.
fn eventual() -> Config {
    let mut cfg = Config::default();
    cfg.routing.read_consistency = ReadConsistency::Eventual;
    cfg
}

/// The first of `k0`, `k1`, ... whose slot is in `first..=last`, skipping `not`.
fn key_in(first: u16, last: u16, not: &[&str]) -> String {
    (0..)
        .map(|n| format!("k{n}"))
        .find(|k| (first..=last).contains(&key_slot(k.as_bytes())) && !not.contains(&k.as_str()))
        .expect("some key lands in any range")
}

/// `ERR haproxy-rs: connection to <addr> was lost; ...`, as `client::reply::backend_error`
/// words a request the server may have run before the connection failed.
fn lost(addr: &str) -> String {
    let (bytes, _) =
        crate::client::reply::backend_error(&crate::backend::BackendError::ConnectionLost, addr);
    crate::testkit::client::render(&bytes)
}
