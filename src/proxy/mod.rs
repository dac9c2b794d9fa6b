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
pub mod reply;
pub mod session;
pub mod workers;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::config::{MaskedString, RoutingConfig};
use crate::resp::{CommandTable, RequestLimits};
use crate::router::{ReplicationClock, RoutingTable};

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
}
