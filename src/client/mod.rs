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
pub mod live;
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
    pub clients: Arc<registry::Clients>,
}

/// What every context of a proxy shares whatever its settings: the topology, the backends, the
/// registries, and what only a restart changes (the backend credentials, `write_durability`,
/// which the backend connections follow). Its fields are [`ProxyContext`]'s of the same names.
#[allow(missing_docs)]
pub struct Shared {
    pub table: Arc<ArcSwap<RoutingTable>>,
    pub backends: Arc<BackendSet>,
    pub commands: Arc<ArcSwap<CommandTable>>,
    pub clock: Arc<ReplicationClock>,
    pub output_budget: Option<Arc<output_budget::OutputBudget>>,
    pub backend_password: Option<MaskedString>,
    pub backend_username: Option<String>,
    pub server_version: Arc<ArcSwap<String>>,
    pub table_changes: tokio::sync::watch::Receiver<u64>,
    pub holds: Arc<HoldStats>,
    pub durability: Option<Durability>,
    pub pinned: Arc<tokio::sync::Semaphore>,
    pub scripts: Arc<crate::scripts::ScriptCache>,
    pub clients: Arc<registry::Clients>,
}

/// The client-side settings of a config that a reload applies (see `crate::reload`); the
/// fields of [`ProxyContext`] of the same names.
#[derive(Debug, Clone, PartialEq)]
#[allow(missing_docs)]
pub struct Settings {
    pub routing: RoutingConfig,
    pub limits: RequestLimits,
    pub max_pipeline: usize,
    pub client_timeout: Option<std::time::Duration>,
    pub output_buffer_limit: usize,
    pub hold: std::time::Duration,
    pub max_held_bytes: usize,
    pub min_replicas: Option<(u32, u64)>,
}

impl Settings {
    /// The settings `cfg` gives.
    pub fn from_config(cfg: &crate::config::Config) -> Settings {
        Settings {
            routing: cfg.routing.clone(),
            limits: RequestLimits {
                max_query_buffer: cfg.client_query_buffer_limit.bytes(),
                ..RequestLimits::default()
            },
            max_pipeline: cfg.max_pipeline,
            client_timeout: (cfg.client_timeout_secs > 0)
                .then(|| std::time::Duration::from_secs(cfg.client_timeout_secs)),
            output_buffer_limit: cfg.client_output_buffer_limit_bytes,
            hold: std::time::Duration::from_millis(cfg.failover.hold_ms),
            max_held_bytes: cfg.failover.max_held_bytes,
            min_replicas: min_replicas(&cfg.failover),
        }
    }
}

impl ProxyContext {
    /// A context of `shared`'s parts with `settings` and `security`.
    pub fn new(shared: Shared, settings: Settings, security: acl::Security) -> ProxyContext {
        let Settings {
            routing,
            limits,
            max_pipeline,
            client_timeout,
            output_buffer_limit,
            hold,
            max_held_bytes,
            min_replicas,
        } = settings;
        let Shared {
            table,
            backends,
            commands,
            clock,
            output_budget,
            backend_password,
            backend_username,
            server_version,
            table_changes,
            holds,
            durability,
            pinned,
            scripts,
            clients,
        } = shared;
        ProxyContext {
            table,
            backends,
            commands,
            clock,
            routing,
            limits,
            max_pipeline,
            client_timeout,
            output_buffer_limit,
            output_budget,
            backend_password,
            backend_username,
            security,
            server_version,
            table_changes,
            hold,
            max_held_bytes,
            holds,
            durability,
            min_replicas,
            pinned,
            scripts,
            clients,
        }
    }

    /// The parts a reloaded context keeps.
    pub fn shared(&self) -> Shared {
        Shared {
            table: self.table.clone(),
            backends: self.backends.clone(),
            commands: self.commands.clone(),
            clock: self.clock.clone(),
            output_budget: self.output_budget.clone(),
            backend_password: self.backend_password.clone(),
            backend_username: self.backend_username.clone(),
            server_version: self.server_version.clone(),
            table_changes: self.table_changes.clone(),
            holds: self.holds.clone(),
            durability: self.durability.clone(),
            pinned: self.pinned.clone(),
            scripts: self.scripts.clone(),
            clients: self.clients.clone(),
        }
    }

    /// The settings in force.
    pub fn settings(&self) -> Settings {
        Settings {
            routing: self.routing.clone(),
            limits: self.limits,
            max_pipeline: self.max_pipeline,
            client_timeout: self.client_timeout,
            output_buffer_limit: self.output_buffer_limit,
            hold: self.hold,
            max_held_bytes: self.max_held_bytes,
            min_replicas: self.min_replicas,
        }
    }

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
#[derive(Clone)]
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
