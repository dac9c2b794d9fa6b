//! haproxy-rs: a RESP-aware Redis proxy that follows Sentinel.
//!
//! - [`resp`]: RESP parsing and encoding on the data path (client requests, backend reply framing,
//!   decoded replies, the command table used for routing).

pub mod resp;
