//! The routing table: one immutable snapshot of the topology, swapped whole.

use std::sync::Arc;
use std::time::Instant;

use super::Server;

/// Writes are fenced off the master: a failover is under way, so new writes wait (held by the
/// sessions) instead of reaching a master that is being replaced.
#[derive(Debug, Clone)]
pub struct Fence {
    /// When the first sign of the failover came.
    pub since: Instant,
    /// What it was (`sentinel 127.0.0.1:26379: +odown`, ...).
    pub cause: String,
}

/// Where commands can go right now. Built complete by the topology and swapped in through an
/// `ArcSwap`, so a session sees either the old or the new table, never a mix. It names servers;
/// whoever sends resolves one to its connections, so a snapshot keeps none alive.
#[derive(Debug, Default)]
pub struct RoutingTable {
    /// Bumped on every change.
    pub generation: u64,
    /// The master writes go to; `None` while it is unknown.
    pub master: Option<Arc<Server>>,
    /// Replicas named by the topology; each one's health decides whether it gets reads.
    pub replicas: Vec<Arc<Server>>,
    /// Set while a failover is under way: `master` is the old master and gets no writes.
    pub fence: Option<Fence>,
}

impl RoutingTable {
    /// A replica that serves reads, has replicated at least `min_offset` and `resolve`s,
    /// round-robin from `*cursor`; what `resolve` made of it.
    pub fn pick_replica<'t, B>(
        &'t self,
        min_offset: Option<u64>,
        cursor: &mut usize,
        mut resolve: impl FnMut(&'t Arc<Server>) -> Option<B>,
    ) -> Option<B> {
        let n = self.replicas.len();
        for i in 0..n {
            let idx = cursor.wrapping_add(i) % n;
            let Some(r) = self.replicas.get(idx) else {
                continue;
            };
            if !r.health.serves_reads() || min_offset.is_some_and(|o| r.health.offset() < o) {
                continue;
            }
            if let Some(to) = resolve(r) {
                *cursor = idx.wrapping_add(1);
                return Some(to);
            }
        }
        None
    }

    /// Addresses in this table (master first).
    pub fn addrs(&self) -> Vec<&str> {
        self.master
            .iter()
            .chain(self.replicas.iter())
            .map(|b| b.addr())
            .collect()
    }
}
