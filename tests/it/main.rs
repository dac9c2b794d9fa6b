//! Integration tests against real redis-server and redis-sentinel processes.
//!
//! One test binary (ripgrep, shotover): `harness` holds the process helpers, the other modules the tests.

mod compose;
mod harness;
mod harness_selftest;
