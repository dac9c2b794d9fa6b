//! Which backends the registry keeps: those the topology names, and those that left it less
//! than the grace period ago (`stats_forget_after_secs`).

use std::sync::Arc;
use std::time::Instant;

use super::counters::lock;
use super::{BackendStats, Stats};

/// A backend's counters in the registry, and since when the topology no longer names it.
#[derive(Debug)]
pub(super) struct BackendEntry {
    pub(super) stats: Arc<BackendStats>,
    pub(super) left_at: Option<Instant>,
}

impl Stats {
    /// The counters of backend `addr`, created on first use.
    pub fn backend(&self, addr: &str) -> Arc<BackendStats> {
        let mut backends = lock(&self.backends);
        if let Some(b) = backends.iter().find(|b| b.stats.addr() == addr) {
            return Arc::clone(&b.stats);
        }
        let b = Arc::new(BackendStats::new(addr));
        backends.push(BackendEntry {
            stats: Arc::clone(&b),
            left_at: None,
        });
        b
    }

    /// The servers the topology names now, up or down (`members`), and the counters of those
    /// that have connections (`live`); returns the backends to release. A backend left out of
    /// `members` for the grace period is forgotten (gone from the page, `/stats.json` and
    /// `/metrics`) and returned, so that its owner lets it go too (no more health checks nor
    /// connections; the caller closes them, the registry only counts): a topology whose servers
    /// come and go (pods with new IPs, removed replicas) then grows neither the series nor the
    /// proxy's tasks and sockets without bound. One named again in time is kept. A `live` one the
    /// registry forgot (it left and came back) is registered again: its backend writes to it.
    ///
    /// A topology source that cannot see the topology right now must not call this: nothing
    /// would then be a member.
    pub fn in_topology(&self, members: &[&str], live: &[Arc<BackendStats>]) -> Vec<String> {
        self.in_topology_at(members, live, Instant::now())
    }

    /// [`in_topology`](Self::in_topology) as of `now`: the whole decision of who leaves when.
    fn in_topology_at(
        &self,
        members: &[&str],
        live: &[Arc<BackendStats>],
        now: Instant,
    ) -> Vec<String> {
        let mut backends = lock(&self.backends);
        for b in live {
            if !backends.iter().any(|e| e.stats.addr() == b.addr()) {
                backends.push(BackendEntry {
                    stats: Arc::clone(b),
                    left_at: None,
                });
            }
        }
        let mut released = Vec::new();
        backends.retain_mut(|e| {
            let addr = e.stats.addr();
            if members.contains(&addr) {
                e.left_at = None;
                return true;
            }
            let left_at = *e.left_at.get_or_insert_with(|| {
                tracing::info!(backend.addr = %addr, forget_after_secs = self.forget_after.as_secs(), "backend left the topology");
                now
            });
            if now.saturating_duration_since(left_at) < self.forget_after {
                return true;
            }
            tracing::info!(backend.addr = %addr, "backend out of the topology for the grace period: released, its stats forgotten");
            released.push(addr.to_owned());
            false
        });
        released
    }

    /// The backends to show, each with since when the topology no longer names it.
    pub(super) fn backends(&self) -> Vec<(Arc<BackendStats>, Option<Instant>)> {
        lock(&self.backends)
            .iter()
            .map(|e| (Arc::clone(&e.stats), e.left_at))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::stats::BackendState;

    fn addrs(stats: &Stats) -> Vec<String> {
        stats
            .snapshot()
            .backends
            .into_iter()
            .map(|b| b.addr)
            .collect()
    }

    #[test]
    fn a_backend_out_of_the_topology_is_forgotten_after_the_grace_period() {
        let stats = Stats::forgetting_after("sentinel", Some("m"), Duration::ZERO);
        let a = stats.backend("10.0.0.1:6379");
        let b = stats.backend("10.0.0.2:6379");
        let c = stats.backend("10.0.0.3:6379");
        c.set_up(false);
        // Nothing forgets before the topology says who is in it.
        assert_eq!(addrs(&stats).len(), 3);
        // A member that is down stays, showing down; the one out of it is released.
        let released = stats.in_topology(
            &["10.0.0.1:6379", "10.0.0.3:6379"],
            std::slice::from_ref(&a),
        );
        assert_eq!(released, ["10.0.0.2:6379"]);
        let snap = stats.snapshot();
        let shown: Vec<(&str, BackendState)> = snap
            .backends
            .iter()
            .map(|b| (b.addr.as_str(), b.state))
            .collect();
        assert_eq!(
            shown,
            [
                ("10.0.0.1:6379", BackendState::Unknown),
                ("10.0.0.3:6379", BackendState::Down)
            ]
        );
        // Back in the topology, with the counters its backend still writes to.
        stats.in_topology(&["10.0.0.1:6379", "10.0.0.2:6379"], &[a, b.clone()]);
        b.record(Duration::from_micros(5), false);
        let snap = stats.snapshot();
        assert_eq!(
            snap.backends
                .iter()
                .map(|b| b.addr.as_str())
                .collect::<Vec<_>>(),
            ["10.0.0.1:6379", "10.0.0.2:6379"]
        );
        assert_eq!(snap.backends[1].errors, 1);
        assert!(Arc::ptr_eq(&stats.backend("10.0.0.2:6379"), &b));
    }

    #[test]
    fn a_backend_is_released_once_when_out_of_the_topology_for_the_whole_grace_period() {
        let grace = Duration::from_secs(60);
        let stats = Stats::forgetting_after("sentinel", Some("m"), grace);
        let (master, down, gone) = ("10.0.0.1:6379", "10.0.0.2:6379", "10.0.0.3:6379");
        for addr in [master, down, gone] {
            stats.backend(addr);
        }
        stats.backend(down).set_up(false);
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let update = |members: &[&str], secs: u64| stats.in_topology_at(members, &[], at(secs));
        assert!(update(&[master, down], 0).is_empty(), "the grace starts");
        assert!(update(&[master, down], 59).is_empty(), "not yet");
        // Back within the grace period: the clock starts again when it leaves again.
        assert!(update(&[master, down, gone], 59).is_empty());
        assert!(update(&[master, down], 60).is_empty());
        assert!(update(&[master, down], 119).is_empty());
        assert_eq!(update(&[master, down], 120), [gone]);
        assert!(update(&[master, down], 500).is_empty(), "released once");
        // A member that is down is never released; nor is one out of an empty snapshot before
        // its grace has run (what the caller adds to the snapshot decides the rest).
        assert!(update(&[], 500).is_empty());
        assert_eq!(update(&[], 560), [master, down]);
        assert!(lock(&stats.backends).is_empty());
        // Named again after its release, it is registered afresh.
        stats.backend(gone);
        assert_eq!(addrs(&stats), [gone]);
    }

    #[test]
    fn a_backend_that_comes_back_within_the_grace_period_is_kept() {
        let stats = Stats::forgetting_after("cluster", None, Duration::from_secs(3600));
        stats.backend("10.0.0.1:6379");
        stats.backend("10.0.0.2:6379");
        stats.in_topology(&["10.0.0.1:6379"], &[]);
        let snap = stats.snapshot();
        assert_eq!(snap.backends.len(), 2, "within the grace period");
        assert_eq!(snap.backends[0].left_topology_age_ms, None);
        assert!(snap.backends[1].left_topology_age_ms.is_some());
        stats.in_topology(&["10.0.0.1:6379", "10.0.0.2:6379"], &[]);
        assert_eq!(addrs(&stats).len(), 2);
        assert!(lock(&stats.backends).iter().all(|e| e.left_at.is_none()));
    }
}
