//! haproxy-rs: a RESP-aware Redis proxy that follows Sentinel.
