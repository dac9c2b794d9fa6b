//! Cluster mode's counters: the slot map the proxy follows, its refreshes, and the redirections
//! and retries the sessions went through.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::counters::{lock, unix_millis, RateMeter};

/// One node of the slot map, as the stats page shows it.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct ClusterNodeSnapshot {
    /// `host:port`.
    pub addr: String,
    /// `master` or `replica`.
    pub role: String,
    /// For a replica, its master.
    pub master: Option<String>,
    /// Slots it serves (a replica: its master's).
    pub slots: usize,
    /// The slot ranges, `0-5460 10923-10950`.
    pub ranges: String,
}

/// The slot map the proxy routes by.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ClusterView {
    /// Slots some master serves (16384 when the cluster is complete).
    pub slots_served: usize,
    /// Masters, then replicas, by address.
    pub nodes: Vec<ClusterNodeSnapshot>,
    /// The node whose `CLUSTER SLOTS` gave this map.
    pub source: Option<String>,
    /// When the map last changed (unix ms).
    pub changed_ms: Option<u64>,
}

/// Everything the stats page shows of cluster mode.
#[derive(Serialize, Clone, Debug, Default, PartialEq)]
pub struct ClusterSnapshot {
    /// The current slot map.
    pub view: ClusterView,
    /// `CLUSTER SLOTS` fetched, successfully, since start.
    pub refreshes: u64,
    /// Refresh attempts that reached no node.
    pub refresh_failures: u64,
    /// When the last successful refresh finished (unix ms).
    pub last_refresh_ms: Option<u64>,
    /// `-MOVED` replies followed.
    pub moved: u64,
    /// `-ASK` replies followed.
    pub ask: u64,
    /// Redirections (`MOVED` + `ASK`) per second.
    pub redirections_per_sec: f64,
    /// Requests (or slot parts of split ones) sent again after `TRYAGAIN`, `CLUSTERDOWN`,
    /// `LOADING`, an unreachable node or a read's lost connection; redirections count apart.
    pub retries: u64,
    /// Requests (or slot parts) whose retry window ran out (the client got the last error).
    pub retries_exhausted: u64,
    /// Multi-key commands split over several slots.
    pub split_commands: u64,
    /// Slots being migrated right now (their reads go to the master).
    pub migrating_slots: u64,
}

/// Cluster mode's counters (atomics on the data path; the view behind a mutex, set by the
/// refresher).
#[derive(Debug)]
pub struct ClusterStats {
    view: Mutex<ClusterView>,
    refreshes: AtomicU64,
    refresh_failures: AtomicU64,
    last_refresh_ms: AtomicU64,
    moved: AtomicU64,
    ask: AtomicU64,
    retries: AtomicU64,
    retries_exhausted: AtomicU64,
    split_commands: AtomicU64,
    migrating_slots: AtomicU64,
    redirection_rate: Mutex<RateMeter>,
}

impl Default for ClusterStats {
    fn default() -> Self {
        ClusterStats {
            view: Mutex::new(ClusterView::default()),
            refreshes: AtomicU64::new(0),
            refresh_failures: AtomicU64::new(0),
            last_refresh_ms: AtomicU64::new(0),
            moved: AtomicU64::new(0),
            ask: AtomicU64::new(0),
            retries: AtomicU64::new(0),
            retries_exhausted: AtomicU64::new(0),
            split_commands: AtomicU64::new(0),
            migrating_slots: AtomicU64::new(0),
            redirection_rate: RateMeter::new(),
        }
    }
}

impl ClusterStats {
    /// A successful refresh; `view` is set when the map changed.
    pub fn refreshed(&self, view: Option<ClusterView>) {
        self.refreshes.fetch_add(1, Ordering::Relaxed);
        self.last_refresh_ms.store(unix_millis(), Ordering::Relaxed);
        if let Some(mut view) = view {
            view.changed_ms = Some(unix_millis());
            *lock(&self.view) = view;
        }
    }
    /// A refresh that reached no node.
    pub fn refresh_failed(&self) {
        self.refresh_failures.fetch_add(1, Ordering::Relaxed);
    }
    /// A `-MOVED` followed.
    pub fn moved(&self) {
        self.moved.fetch_add(1, Ordering::Relaxed);
    }
    /// An `-ASK` followed.
    pub fn ask(&self) {
        self.ask.fetch_add(1, Ordering::Relaxed);
    }
    /// A request sent again after a transient error.
    pub fn retried(&self) {
        self.retries.fetch_add(1, Ordering::Relaxed);
    }
    /// A request that ran out of retry window.
    pub fn retries_exhausted(&self) {
        self.retries_exhausted.fetch_add(1, Ordering::Relaxed);
    }
    /// A multi-key command split over several slots.
    pub fn split(&self) {
        self.split_commands.fetch_add(1, Ordering::Relaxed);
    }

    /// How many slots are being migrated.
    pub fn set_migrating(&self, slots: usize) {
        self.migrating_slots.store(slots as u64, Ordering::Relaxed);
    }

    /// Recomputes the redirection rate when its window has passed.
    pub(crate) fn refresh_rate(&self, now: Instant) -> f64 {
        let total = self.moved.load(Ordering::Relaxed) + self.ask.load(Ordering::Relaxed);
        lock(&self.redirection_rate).update(total, now)
    }

    /// Copies the counters and the view.
    pub fn snapshot(&self, now: Instant) -> ClusterSnapshot {
        let last = self.last_refresh_ms.load(Ordering::Relaxed);
        ClusterSnapshot {
            view: lock(&self.view).clone(),
            refreshes: self.refreshes.load(Ordering::Relaxed),
            refresh_failures: self.refresh_failures.load(Ordering::Relaxed),
            last_refresh_ms: (last > 0).then_some(last),
            moved: self.moved.load(Ordering::Relaxed),
            ask: self.ask.load(Ordering::Relaxed),
            redirections_per_sec: (self.refresh_rate(now) * 100.0).round() / 100.0,
            retries: self.retries.load(Ordering::Relaxed),
            retries_exhausted: self.retries_exhausted.load(Ordering::Relaxed),
            split_commands: self.split_commands.load(Ordering::Relaxed),
            migrating_slots: self.migrating_slots.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_and_view_reach_the_snapshot() {
        let s = ClusterStats::default();
        s.moved();
        s.moved();
        s.ask();
        s.retried();
        s.split();
        s.refreshed(Some(ClusterView {
            slots_served: 16384,
            ..ClusterView::default()
        }));
        s.refreshed(None);
        let snap = s.snapshot(Instant::now());
        assert_eq!((snap.moved, snap.ask, snap.retries), (2, 1, 1));
        assert_eq!(snap.split_commands, 1);
        assert_eq!(snap.refreshes, 2);
        assert_eq!(snap.view.slots_served, 16384);
        assert!(snap.view.changed_ms.is_some() && snap.last_refresh_ms.is_some());
    }
}
