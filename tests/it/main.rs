//! Integration tests against real redis-server and redis-sentinel processes.
//!
//! One test binary (ripgrep, shotover): `harness` holds the process helpers, the other modules the tests.

mod admin;
mod backend_auth;
mod bench;
mod busy;
mod chaos_script;
mod client_commands;
mod clients;
mod cluster_mode;
mod compose;
mod consistency;
mod differential;
mod docs_commands;
mod docs_pages;
mod dropin_failover;
mod dropin_python;
mod every_server;
mod failover_writes;
mod harness;
mod harness_selftest;
mod keyspace_events;
mod layers;
mod limits;
mod logging;
mod memory_limits;
mod metrics;
mod modes_agree;
mod partition;
mod protocol;
mod pubsub;
mod pubsub_hard;
mod released_backends;
mod reload;
mod restart;
mod routing;
mod scripts;
mod security;
mod sentinel_failover;
mod sentinel_loss;
mod soak;
mod stats_http;
mod tls;
mod tracking;
mod transactions;
mod wait;
