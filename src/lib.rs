//! haproxy-rs: a RESP-aware Redis proxy that follows Sentinel.
//!
//! - [`stats`]: counters for listeners, backends and sentinel links, and the stats page on :8404.

pub mod stats;
