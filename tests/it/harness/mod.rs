//! Test harness: real `redis-server` and `redis-sentinel` processes on loopback ports, and polling asserts.
//!
//! - `ports`: process-wide registry of free loopback ports (sozu `port_registry`).
//! - `redis`: [`RedisServer`], a master or replica in its own temp dir, killed on drop.
//! - `sentinel`: [`Sentinel`] and [`Topology`] (master + replicas + sentinels, `failover()`).
//! - `cluster`: [`Cluster`], a real Redis Cluster created with `redis-cli --cluster create`.
//! - `migration`: moving slots between a cluster's masters by hand, step by step (`ASK`, `MOVED`).
//! - `tls`: a test CA and certificates (rcgen), a TLS-only `redis-server`, a raw TLS client.
//! - `load`: a closed-loop write load that records what was acknowledged, for failover tests.
//! - `txload`: the same with `MULTI`/`EXEC` transactions, and the atomicity check of their log.
//! - `eventually`: the [`eventually!`](crate::eventually) macro and the `HAPROXY_RS_TEST_PATIENCE` multiplier.

// The harness is an API for every test module; each build uses only part of it.
#![allow(dead_code, unused_imports)]

pub mod cluster;
pub mod eventually;
pub mod load;
pub mod migration;
pub mod netns;
pub mod ports;
pub mod proxy;
pub mod redis;
pub mod sentinel;
pub mod tls;
pub mod txload;

pub use self::cluster::Cluster;
pub use self::redis::RedisServer;
pub use self::sentinel::{Sentinel, SentinelOptions, Topology, MASTER_NAME};
