//! Cluster mode: the proxy follows a Redis Cluster's slot map and routes every request by hash
//! slot, so clients without cluster support talk to one endpoint.
//!
//! - [`refresh`]: fetches `CLUSTER SLOTS` at start, periodically and on demand (`MOVED`, an
//!   unreachable node) and publishes a [`ClusterMap`].
//! - [`plan`]: where one request goes (a slot, several slots, every master, or the proxy).
//! - [`exec`]: sends a pipeline's parts grouped per node, follows `MOVED`/`ASK`, retries
//!   `TRYAGAIN`/`CLUSTERDOWN` within `cluster.retry_window_ms`, and [`merge`]s split replies.
//! - [`Dispatcher`]: one client's routing (the session is `proxy::session`'s, as in every mode).
#![cfg_attr(
    not(test),
    deny(
        clippy::unwrap_used,
        clippy::expect_used,
        clippy::panic,
        clippy::indexing_slicing
    )
)]

mod dispatcher;
pub mod exec;
pub mod locate;
pub mod merge;
mod pin_commands;
pub mod pinned;
pub mod plan;
pub mod refresh;
pub mod tx;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::Notify;

use crate::backend::{Backend, BackendSet};
use crate::router::slot::SLOTS;
use crate::router::slotmap::SlotMap;
use crate::stats::ClusterStats;

pub use dispatcher::Dispatcher;

/// The backends serving one slot range.
#[derive(Debug, Clone)]
pub struct Owners {
    /// Writes (and reads under `read_policy = "master"`).
    pub master: Arc<Backend>,
    /// Reads, on `READONLY` connections.
    pub replicas: Vec<Arc<Backend>>,
}

/// An immutable snapshot of the cluster: the slot map with each owner's backends resolved.
#[derive(Debug, Default)]
pub struct ClusterMap {
    /// The slots and their owners' addresses.
    pub slots: SlotMap,
    /// Bumped on every change.
    pub generation: u64,
    /// Slots served (counted once: [`SlotMap::served`] walks every slot).
    pub served: usize,
    /// Indexed like [`SlotMap::owner_sets`].
    owners: Vec<Owners>,
    /// Every distinct master, by the first slot it serves (`SCAN` cursors and fan-out use this
    /// order).
    masters: Vec<Arc<Backend>>,
    /// The first slot of each of `masters`: fan-out parts name a master by it, so a retry after a
    /// failover reaches the replica that took over.
    first_slots: Vec<u16>,
}

impl ClusterMap {
    /// Who serves `slot`, if anyone.
    pub fn owners(&self, slot: u16) -> Option<&Owners> {
        self.owners.get(self.slots.owner_index(slot)?)
    }
    /// Every master, by the first slot it serves.
    pub fn masters(&self) -> &[Arc<Backend>] {
        &self.masters
    }
    /// Every node's address: the masters, then the replicas (a replica of several ranges once).
    pub fn node_addrs(&self) -> Vec<String> {
        self.nodes().iter().map(|n| n.addr().to_string()).collect()
    }

    /// Every node: the masters, then the replicas (a replica of several ranges once).
    pub fn nodes(&self) -> Vec<Arc<Backend>> {
        let mut out = self.masters.clone();
        for o in &self.owners {
            for r in &o.replicas {
                if !out.iter().any(|n| n.addr() == r.addr()) {
                    out.push(r.clone());
                }
            }
        }
        out
    }

    /// The first slot each of [`masters`](Self::masters) serves.
    pub fn first_slots(&self) -> &[u16] {
        &self.first_slots
    }
}

/// What cluster sessions share: the current map, the backends, and the refresher's trigger.
pub struct ClusterState {
    map: ArcSwap<ClusterMap>,
    /// Connections for writes (and reads from masters).
    masters: BackendSet,
    /// `READONLY` connections for replica reads.
    replicas: BackendSet,
    refresh: Notify,
    /// One bit per slot: a migration of it is under way (reads go to its master, not to a
    /// replica, which would answer nil for keys already moved).
    migrating: Box<[AtomicU64]>,
    /// Redirection, retry and refresh counters.
    pub stats: Arc<ClusterStats>,
    /// `cluster.retry_window_ms`.
    pub retry_window: Duration,
    /// `cluster.max_multi_commands` and `cluster.max_multi_bytes`.
    pub tx_limits: tx::TxLimits,
    /// Starts the health checks of a new replica (whether it may serve reads: reachable, linked,
    /// not lagging, as in Sentinel mode).
    watch_replica: Box<dyn Fn(Arc<Backend>) + Send + Sync>,
}

impl std::fmt::Debug for ClusterState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterState")
            .field("generation", &self.map.load().generation)
            .finish()
    }
}

impl ClusterState {
    /// An empty map over these backend sets (`replicas` sends `READONLY` on connect);
    /// `watch_replica` starts the health checks of each new replica.
    pub fn new(
        masters: BackendSet,
        replicas: BackendSet,
        stats: Arc<ClusterStats>,
        retry_window: Duration,
        watch_replica: Box<dyn Fn(Arc<Backend>) + Send + Sync>,
    ) -> ClusterState {
        ClusterState {
            map: ArcSwap::from_pointee(ClusterMap::default()),
            masters,
            replicas,
            refresh: Notify::new(),
            migrating: (0..usize::from(SLOTS) / 64)
                .map(|_| AtomicU64::new(0))
                .collect(),
            stats,
            retry_window,
            tx_limits: tx::TxLimits::default(),
            watch_replica,
        }
    }

    /// The current map.
    pub fn map(&self) -> Arc<ClusterMap> {
        self.map.load_full()
    }

    /// Asks the refresher for a new map now (coalesced: many requests, one refresh).
    pub fn request_refresh(&self) {
        self.refresh.notify_one();
    }

    /// Whether `slot` is being migrated (as of the last refresh, or an `ASK` seen since).
    pub fn slot_migrating(&self, slot: u16) -> bool {
        let (word, bit) = (usize::from(slot) / 64, slot % 64);
        self.migrating
            .get(word)
            .is_some_and(|w| w.load(Ordering::Relaxed) & (1 << bit) != 0)
    }

    /// Marks `slot` as being migrated until the next refresh says otherwise.
    pub fn mark_migrating(&self, slot: u16) {
        let (word, bit) = (usize::from(slot) / 64, slot % 64);
        if let Some(w) = self.migrating.get(word) {
            w.fetch_or(1 << bit, Ordering::Relaxed);
        }
    }

    /// Replaces the set of slots being migrated.
    pub(crate) fn set_migrating(&self, slots: &[u16]) {
        let mut words = vec![0u64; self.migrating.len()];
        for &s in slots {
            if let Some(w) = words.get_mut(usize::from(s) / 64) {
                *w |= 1 << (s % 64);
            }
        }
        for (w, v) in self.migrating.iter().zip(words) {
            w.store(v, Ordering::Relaxed);
        }
    }

    /// The master connections to `addr` (a `MOVED`/`ASK` target the map may not know yet).
    pub fn master_backend(&self, addr: &str) -> Arc<Backend> {
        self.masters.get_or_spawn(addr).0
    }

    /// Tells the stats and the backends which nodes the cluster has now, failed ones included:
    /// the others are forgotten and released after `stats_forget_after_secs` (see
    /// [`crate::backend::follow_membership`]). A node the slot map drops is already closed, at
    /// once, by [`publish`](Self::publish).
    pub(crate) fn members(&self, addrs: &[&str]) {
        crate::backend::follow_membership(&[&self.masters, &self.replicas], addrs);
    }

    /// Publishes `slots` as the new map; backends no longer named are closed.
    pub(crate) fn publish(&self, slots: SlotMap) -> Arc<ClusterMap> {
        let generation = self.map.load().generation + 1;
        let owners: Vec<Owners> = slots
            .owner_sets()
            .iter()
            .map(|o| Owners {
                master: self.masters.get_or_spawn(&o.master).0,
                replicas: o
                    .replicas
                    .iter()
                    .map(|r| {
                        let (backend, new) = self.replicas.get_or_spawn(r);
                        if new {
                            (self.watch_replica)(backend.clone());
                        }
                        backend
                    })
                    .collect(),
            })
            .collect();
        // Ordered by the first slot each serves: a failover keeps the order (the promoted
        // replica takes its master's place), so a SCAN across it neither misses nor repeats.
        let mut masters: Vec<Arc<Backend>> = Vec::new();
        let mut first_slots = Vec::new();
        for slot in 0..SLOTS {
            if let Some(o) = slots.owner_index(slot).and_then(|i| owners.get(i)) {
                if !masters.iter().any(|m| Arc::ptr_eq(m, &o.master)) {
                    masters.push(o.master.clone());
                    first_slots.push(slot);
                }
            }
        }
        let master_addrs: Vec<&str> = masters.iter().map(|m| m.addr()).collect();
        self.masters.retain(&master_addrs);
        let replica_addrs: Vec<&str> = owners
            .iter()
            .flat_map(|o| o.replicas.iter().map(|r| r.addr()))
            .collect();
        self.replicas.retain(&replica_addrs);
        let map = Arc::new(ClusterMap {
            served: slots.served(),
            slots,
            generation,
            owners,
            masters,
            first_slots,
        });
        self.map.store(map.clone());
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::ConnSettings;
    use crate::config::BackendConfig;
    use crate::stats::Stats;
    use tokio_util::sync::CancellationToken;
    use tokio_util::task::TaskTracker;

    fn state() -> ClusterState {
        let stats = Stats::new("cluster", None);
        let set = || {
            BackendSet::new(
                ConnSettings::from_config(&BackendConfig::default(), 1),
                stats.clone(),
                CancellationToken::new(),
                TaskTracker::new(),
            )
        };
        ClusterState::new(
            set(),
            set(),
            stats.cluster(),
            Duration::from_secs(1),
            Box::new(|_| {}),
        )
    }

    #[test]
    fn migrating_slots_are_marked_and_replaced() {
        let s = state();
        assert!(!s.slot_migrating(5));
        s.mark_migrating(5);
        s.mark_migrating(16383);
        assert!(s.slot_migrating(5) && s.slot_migrating(16383));
        assert!(!s.slot_migrating(4) && !s.slot_migrating(69));
        s.set_migrating(&[69]);
        assert!(!s.slot_migrating(5) && s.slot_migrating(69));
    }
}
