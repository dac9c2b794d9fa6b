//! A server the routing table names: its address and what the health checks last saw of it.
//!
//! The table holds these, not connections: whoever sends a request resolves the server to its
//! connections (`backend::BackendSet::resolve`), so a table snapshot keeps no connection alive.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// What a server is, as last learned from Sentinel, `ROLE` or `INFO replication`.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Not known yet.
    Unknown,
    /// Accepts writes.
    Master,
    /// Replicates from the master.
    Replica,
}

impl Role {
    /// From [`to_u8`](Self::to_u8) (kept in an atomic).
    pub(crate) fn from_u8(v: u8) -> Self {
        match v {
            1 => Role::Master,
            2 => Role::Replica,
            _ => Role::Unknown,
        }
    }

    /// For an atomic.
    pub(crate) fn to_u8(self) -> u8 {
        match self {
            Role::Unknown => 0,
            Role::Master => 1,
            Role::Replica => 2,
        }
    }

    /// Lowercase name, as in JSON and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Unknown => "unknown",
            Role::Master => "master",
            Role::Replica => "replica",
        }
    }
}

/// One server, by identity: the backend set makes one per backend it spawns, so a server that
/// was reset or released and named again is a new `Server`, and a table naming the old one
/// resolves to nothing (as a down server: no writes, no reads).
#[derive(Debug)]
pub struct Server {
    addr: String,
    /// Where the set that made it keeps its backend: resolving the server on the data path is
    /// an index, not a lookup by address.
    index: usize,
    /// What the health checks see.
    pub health: ServerHealth,
}

impl Server {
    /// The server at `addr`, not checked yet, whose backend is at `index` in its set.
    pub fn new(addr: &str, index: usize) -> Server {
        Server {
            addr: addr.to_string(),
            index,
            health: ServerHealth::default(),
        }
    }

    /// `host:port`.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Where its set keeps its backend.
    pub fn index(&self) -> usize {
        self.index
    }
}

/// A replica as its master's `INFO replication` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaLink {
    /// `ip:port`.
    pub addr: String,
    /// `state=online`: synced and streaming.
    pub online: bool,
    /// `lag=`: seconds since the replica last acknowledged (`None`: not shown).
    pub lag: Option<u64>,
}

/// What the health checks last saw of a server (atomics: read on every routed read).
#[derive(Debug, Default)]
pub struct ServerHealth {
    reachable: AtomicBool,
    role: AtomicU8,
    lag_ok: AtomicBool,
    offset: AtomicU64,
    /// A master's connected replicas. A mutex, not an atomic: written once per check and read
    /// once per topology update (and per write batch with `min_replicas_to_ack`), never across
    /// an `.await`.
    replicas: Mutex<Vec<ReplicaLink>>,
}

impl ServerHealth {
    /// Records a failed check.
    pub fn set_unreachable(&self) {
        self.reachable.store(false, Ordering::Release);
    }
    /// Records a successful check.
    pub fn set_checked(&self, role: Role, offset: u64, lag_ok: bool) {
        self.role.store(role.to_u8(), Ordering::Relaxed);
        self.offset.store(offset, Ordering::Relaxed);
        self.lag_ok.store(lag_ok, Ordering::Relaxed);
        self.reachable.store(true, Ordering::Release);
    }
    /// Records the replicas a master reports connected (none for a replica).
    pub fn set_replicas(&self, replicas: Vec<ReplicaLink>) {
        *self.replicas.lock().unwrap_or_else(|e| e.into_inner()) = replicas;
    }
    /// The replicas the server reported connected at its last successful check, as `ip:port`.
    pub fn replicas(&self) -> Vec<String> {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|r| r.addr.clone())
            .collect()
    }
    /// How many of those were online and had acknowledged within `max_lag_secs`.
    pub fn replicas_in_sync(&self, max_lag_secs: u64) -> usize {
        self.replicas
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|r| r.online && r.lag.is_some_and(|l| l <= max_lag_secs))
            .count()
    }
    /// Whether the last check succeeded.
    pub fn reachable(&self) -> bool {
        self.reachable.load(Ordering::Acquire)
    }
    /// The role the server reported last.
    pub fn role(&self) -> Role {
        Role::from_u8(self.role.load(Ordering::Relaxed))
    }
    /// Replication offset: `master_repl_offset` of a master, `slave_repl_offset` of a replica.
    pub fn offset(&self) -> u64 {
        self.offset.load(Ordering::Relaxed)
    }
    /// A replica fit to serve reads: reachable, and its data at most `max_replica_lag_secs`
    /// old (its link is up and recently active, or went down no longer ago than that: during
    /// a failover replicas keep serving reads).
    pub fn serves_reads(&self) -> bool {
        self.reachable() && self.role() == Role::Replica && self.lag_ok.load(Ordering::Relaxed)
    }
}
