//! The `haproxy-rs` binary.
fn main() {}
