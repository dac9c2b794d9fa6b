//! The client side: listeners accept connections, one session task serves each client.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod listener;
pub mod local;
pub mod reply;
pub mod session;
pub mod workers;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{MaskedString, RoutingConfig};
use crate::resp::{CommandTable, RequestLimits};
use crate::router::{ReplicationClock, RoutingTable};
use crate::stats::HoldStats;

/// What every session shares: the current routing table and command table, and settings.
pub struct ProxyContext {
    /// The topology's current snapshot.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// Command flags, from the master's `COMMAND` once fetched (built-in until then).
    pub commands: Arc<ArcSwap<CommandTable>>,
    /// The master's replication offset, for read-your-writes.
    pub clock: Arc<ReplicationClock>,
    /// Read policy and consistency.
    pub routing: RoutingConfig,
    /// Request size limits.
    pub limits: RequestLimits,
    /// Most requests of one client in flight.
    pub max_pipeline: usize,
    /// The backend password: a client's `AUTH` with it is accepted (clients configured for the
    /// servers keep working through the proxy).
    pub backend_password: Option<MaskedString>,
    /// The backend ACL user, if any.
    pub backend_username: Option<String>,
    /// The master's `redis_version`, reported by `HELLO`.
    pub server_version: Arc<ArcSwap<String>>,
    /// Routing-table generations: held requests are routed again on every change.
    pub table_changes: tokio::sync::watch::Receiver<u64>,
    /// Longest a request is held waiting for a master (`failover.hold_ms`).
    pub hold: std::time::Duration,
    /// Bound on held request bytes, all sessions together.
    pub max_held_bytes: usize,
    /// Held-request accounting (the bound and the stats).
    pub holds: Arc<HoldStats>,
}
