//! What every client-facing part uses: the context all sessions share, local answers, reply
//! encoding, the client's own state and the registry of all clients (`CLIENT INFO`, `LIST`), the output backlog and budget, and client
//! authentication with users' rules and the command policy, and the
//! one reply of a command sent to several servers (`fanout`). Below `pubsub`, `primary`,
//! `cluster` and `proxy`, which all build on it.
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

pub mod acl;
pub mod acl_describe;
pub mod acl_rules;
pub mod backend_auth;
pub mod backlog;
pub mod client_state;
pub mod fanout;
pub mod local;
pub mod output_budget;
pub mod policy;
pub mod registry;
pub mod reply;
pub mod reply_mode;
pub mod sha256;

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::backend::BackendSet;
use crate::config::{MaskedString, RoutingConfig};
use crate::resp::{CommandTable, RequestLimits};
use crate::router::{ReplicationClock, RoutingTable};
use crate::stats::HoldStats;

/// What every session shares: the current routing table and command table, and settings.
pub struct ProxyContext {
    /// The topology's current snapshot.
    pub table: Arc<ArcSwap<RoutingTable>>,
    /// The backends of the servers the table names (Sentinel and static mode): where a session
    /// resolves a server to its connections.
    pub backends: Arc<BackendSet>,
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
    /// Idle clients are closed after this long (`client_timeout_secs`); `None`: never.
    pub client_timeout: Option<std::time::Duration>,
    /// Reply bytes that may wait for a client behind the one being written
    /// (`client_output_buffer_limit_bytes`); past it the client is disconnected. 0: no limit.
    pub output_buffer_limit: usize,
    /// `max_output_bytes_total`: the reply bytes waiting for all clients together (`None`: no
    /// limit).
    pub output_budget: Option<Arc<output_budget::OutputBudget>>,
    /// The backend password: a client's `AUTH` with it is accepted (clients configured for the
    /// servers keep working through the proxy).
    pub backend_password: Option<MaskedString>,
    /// The backend ACL user, if any.
    pub backend_username: Option<String>,
    /// Client authentication, users' rules and the command policy (`[auth]`, `[commands]`).
    pub security: acl::Security,
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
    /// `write_durability = "replicas:N"`: write batches are followed by this `WAIT`.
    pub durability: Option<Durability>,
    /// `min_replicas_to_ack`: (replicas, their largest lag in seconds).
    pub min_replicas: Option<(u32, u64)>,
    /// Permits for pinned connections (transactions, blocking commands), all clients together.
    pub pinned: Arc<tokio::sync::Semaphore>,
    /// Scripts seen, loaded onto every server (Redis 7 does not replicate `SCRIPT LOAD`).
    pub scripts: Arc<crate::scripts::ScriptCache>,
    /// Every client session of this proxy (`CLIENT LIST`, `KILL`, `UNBLOCK`, `PAUSE`).
    pub clients: registry::Clients,
}

impl ProxyContext {
    /// Whether batches keep which of their requests are writes (their replies may be turned
    /// into errors: `write_durability`, `min_replicas_to_ack`).
    pub fn marks_writes(&self) -> bool {
        self.durability.is_some() || self.min_replicas.is_some()
    }
}

/// `min_replicas_to_ack` from the `[failover]` settings (`None`: off).
pub fn min_replicas(f: &crate::config::FailoverConfig) -> Option<(u32, u64)> {
    (f.min_replicas_to_ack > 0).then_some((f.min_replicas_to_ack, f.min_replicas_max_lag_secs))
}

/// Writes are acknowledged only once `replicas` replicas have them.
pub struct Durability {
    /// How many replicas must confirm.
    pub replicas: u32,
    /// `WAIT`'s timeout, for the error text.
    pub timeout_ms: u64,
    /// `WAIT <replicas> <timeout_ms>`, encoded once; each backend connection writes one after
    /// the durable batches of each syscall.
    pub wait: bytes::Bytes,
}

impl Durability {
    /// From the `[failover]` settings; `None` when writes are acknowledged as the master does.
    pub fn from_config(f: &crate::config::FailoverConfig) -> Option<Durability> {
        let n = f.write_durability.replicas;
        (n > 0).then(|| Durability {
            replicas: n,
            timeout_ms: f.durability_timeout_ms,
            wait: crate::resp::encode_command(&[
                "WAIT".to_string(),
                n.to_string(),
                f.durability_timeout_ms.to_string(),
            ]),
        })
    }
}
