//! haproxy-rs: a RESP-aware Redis proxy.
//!
//! - [`resp`]: RESP framing.
//! - [`stats`]: counters and the stats page.

pub mod resp;
pub mod stats;
