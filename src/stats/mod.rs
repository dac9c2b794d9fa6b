//! Stats registry, its point-in-time [`Snapshot`], and the HTTP stats page on :8404.
//!
//! The data path holds `Arc`s to [`ListenerStats`] and [`BackendStats`] and only touches
//! atomics. Registration, failovers and snapshots take `std::sync::Mutex`es that are never
//! held across an `.await` and never on the per-command path.

pub mod admin;
mod auth;
mod cluster;
mod counters;
mod histogram;
mod hold;
mod http;
mod prometheus;
mod render;
#[cfg(test)]
mod samples;
pub mod switchover;

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;

pub use auth::{AuthSnapshot, AuthStats, Denied};
pub use cluster::{ClusterNodeSnapshot, ClusterSnapshot, ClusterStats, ClusterView};
pub use counters::{
    BackendSnapshot, BackendState, BackendStats, LatencySnapshot, ListenerSnapshot, ListenerStats,
    Role, SentinelSnapshot, SentinelStats,
};
pub use histogram::{Histogram, HistogramSnapshot};
pub use hold::{HoldSnapshot, HoldStats};
pub use http::{serve, Admin};
pub use prometheus::render_prometheus;
pub use render::{render_html, render_json};

use counters::{lock, unix_millis};

/// How many failovers the history keeps.
pub const FAILOVER_HISTORY: usize = 50;

/// How long a backend that left the topology stays on the page, in `/stats.json` and
/// `/metrics` by default (`stats_forget_after_secs`).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// A backend's counters in the registry, and since when the topology no longer names it.
#[derive(Debug)]
struct BackendEntry {
    stats: Arc<BackendStats>,
    left_at: Option<Instant>,
}

/// One observed change of master.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct FailoverRecord {
    /// When it was recorded (unix millis).
    pub at_ms: u64,
    /// The master before, if one was known.
    pub old_master: Option<String>,
    /// The new master.
    pub new_master: String,
    /// How it was detected, e.g. `+switch-master` or `poll`.
    pub detected_by: String,
    /// How long writes were held (from the first sign of the failover to the new master), when
    /// they were fenced.
    pub writes_held_ms: Option<u64>,
    /// The Sentinel events seen during the failover, `+<ms after the first> <sentinel> <event>`.
    pub events: Vec<String>,
    /// Requests held during it, and what became of them (totals over the failover).
    pub holds: Option<HoldSnapshot>,
}

/// The stats registry: one per proxy, shared by the data path, topology tasks and the
/// stats page.
#[derive(Debug)]
pub struct Stats {
    mode: String,
    master_name: Option<String>,
    started_at: Instant,
    started_ms: u64,
    master: Mutex<Option<String>>,
    topology_problem: Mutex<Option<String>>,
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    backends: Mutex<Vec<BackendEntry>>,
    forget_after: Duration,
    sentinels: Mutex<Vec<Arc<SentinelStats>>>,
    failovers: Mutex<VecDeque<FailoverRecord>>,
    failovers_total: AtomicU64,
    hold: Arc<HoldStats>,
    cluster: Arc<ClusterStats>,
    auth: Arc<AuthStats>,
}

/// Everything the stats page shows, copied at one moment. Times are unix millis, ages
/// are milliseconds before `now_ms`.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// Crate version.
    pub version: String,
    /// When the snapshot was taken.
    pub now_ms: u64,
    /// When the proxy started.
    pub started_ms: u64,
    /// Seconds since start.
    pub uptime_secs: u64,
    /// Topology mode: `sentinel`, `static` or `cluster`.
    pub mode: String,
    /// Sentinel master name, if in sentinel mode.
    pub master_name: Option<String>,
    /// Current master address, if known; outside cluster mode `/healthz` is 200 only when this
    /// is set (cluster mode has a master per slot range: see [`Snapshot::cluster`]).
    pub master: Option<String>,
    /// Where the topology comes from right now, in words: all sentinels, some, or none (then the
    /// last known topology is served, checked by the proxy's own health checks), or why it
    /// cannot be followed (no sentinel knows the configured master name). It starts with a word
    /// in capitals when the proxy cannot follow its topology source.
    pub topology_status: String,
    /// Client-facing listeners.
    pub listeners: Vec<ListenerSnapshot>,
    /// Redis backends, in registration order.
    pub backends: Vec<BackendSnapshot>,
    /// Sentinel links.
    pub sentinels: Vec<SentinelSnapshot>,
    /// Failovers seen since start.
    pub failovers_total: u64,
    /// The last [`FAILOVER_HISTORY`] failovers, newest first.
    pub failovers: Vec<FailoverRecord>,
    /// Requests held while there was no master to write to.
    pub hold: HoldSnapshot,
    /// Cluster mode: the slot map, redirections and retries (`None` in the other modes).
    pub cluster: Option<ClusterSnapshot>,
    /// Client authentication.
    pub auth: AuthSnapshot,
}

impl Snapshot {
    /// Whether a master is known, or in cluster mode every slot served (what `/healthz` reports).
    pub fn healthy(&self) -> bool {
        match &self.cluster {
            Some(c) => c.view.slots_served == usize::from(crate::router::slot::SLOTS),
            None => self.master.is_some(),
        }
    }
}

impl Stats {
    /// A new registry; `mode` is `"sentinel"`, `"static"` or `"cluster"`. Backends that leave
    /// the topology are forgotten after [`FORGET_AFTER`].
    pub fn new(mode: &str, master_name: Option<&str>) -> Arc<Stats> {
        Stats::forgetting_after(mode, master_name, FORGET_AFTER)
    }

    /// A new registry that forgets a backend `forget_after` once the topology no longer names
    /// it (see [`Stats::in_topology`]).
    pub fn forgetting_after(
        mode: &str,
        master_name: Option<&str>,
        forget_after: Duration,
    ) -> Arc<Stats> {
        Arc::new(Stats {
            mode: mode.to_owned(),
            master_name: master_name.map(str::to_owned),
            started_at: Instant::now(),
            started_ms: unix_millis(),
            master: Mutex::new(None),
            topology_problem: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
            backends: Mutex::new(Vec::new()),
            forget_after,
            sentinels: Mutex::new(Vec::new()),
            failovers: Mutex::new(VecDeque::with_capacity(FAILOVER_HISTORY)),
            failovers_total: AtomicU64::new(0),
            hold: Arc::new(HoldStats::default()),
            cluster: Arc::new(ClusterStats::default()),
            auth: Arc::new(AuthStats::default()),
        })
    }

    /// The authentication counters (shared with the sessions).
    pub fn auth(&self) -> Arc<AuthStats> {
        Arc::clone(&self.auth)
    }

    /// The held-request counters (shared with the sessions).
    pub fn hold(&self) -> Arc<HoldStats> {
        Arc::clone(&self.hold)
    }

    /// Cluster mode's counters (shared with the sessions and the refresher).
    pub fn cluster(&self) -> Arc<ClusterStats> {
        Arc::clone(&self.cluster)
    }

    /// Registers a listener (once, at start) and returns its counters.
    pub fn listener(&self, name: &str, addr: SocketAddr) -> Arc<ListenerStats> {
        let stats = Arc::new(ListenerStats::new(name, addr));
        lock(&self.listeners).push(Arc::clone(&stats));
        stats
    }

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

    /// The state of the link to sentinel `addr`, created on first use.
    pub fn sentinel(&self, addr: &str) -> Arc<SentinelStats> {
        let mut sentinels = lock(&self.sentinels);
        if let Some(s) = sentinels.iter().find(|s| s.addr() == addr) {
            return Arc::clone(s);
        }
        let s = Arc::new(SentinelStats::new(addr));
        sentinels.push(Arc::clone(&s));
        s
    }

    /// Records a change of master; the history keeps the last [`FAILOVER_HISTORY`].
    pub fn record_failover(&self, old_master: Option<&str>, new_master: &str, detected_by: &str) {
        self.push_failover(FailoverRecord {
            at_ms: unix_millis(),
            old_master: old_master.map(str::to_owned),
            new_master: new_master.to_owned(),
            detected_by: detected_by.to_owned(),
            writes_held_ms: None,
            events: Vec::new(),
            holds: None,
        });
    }

    /// Records a failover during which writes were fenced for `held`.
    pub fn record_fenced_failover(
        &self,
        old_master: &str,
        new_master: &str,
        detected_by: &str,
        held: std::time::Duration,
        events: Vec<String>,
        holds: HoldSnapshot,
    ) {
        self.push_failover(FailoverRecord {
            at_ms: unix_millis(),
            old_master: Some(old_master.to_owned()),
            new_master: new_master.to_owned(),
            detected_by: detected_by.to_owned(),
            writes_held_ms: Some(u64::try_from(held.as_millis()).unwrap_or(u64::MAX)),
            events,
            holds: Some(holds),
        });
    }

    /// Updates the held-request counts of the newest failover (they keep changing for a moment
    /// after it is recorded, while the sessions release what they held).
    pub fn update_last_failover_holds(&self, holds: HoldSnapshot) {
        if let Some(last) = lock(&self.failovers).back_mut() {
            last.holds = Some(holds);
        }
    }

    fn push_failover(&self, record: FailoverRecord) {
        let mut history = lock(&self.failovers);
        while history.len() >= FAILOVER_HISTORY {
            history.pop_front();
        }
        history.push_back(record);
        self.failovers_total.fetch_add(1, Ordering::Relaxed);
    }

    /// Sets (or clears) why the topology source cannot be followed, shown as the topology
    /// status instead of the sentinels' count.
    pub fn set_topology_problem(&self, problem: Option<String>) {
        *lock(&self.topology_problem) = problem;
    }

    /// Sets (or clears) the current master address.
    pub fn set_master(&self, addr: Option<&str>) {
        *lock(&self.master) = addr.map(str::to_owned);
    }

    /// Recomputes ops/s rates whose window has elapsed; the stats server calls this every
    /// second so rates stay fresh between page loads. Snapshots do it too.
    pub fn refresh_rates(&self) {
        let now = Instant::now();
        for l in self.listeners() {
            l.refresh_rate(now);
        }
        for (b, _) in self.backends() {
            b.refresh_rate(now);
        }
        self.cluster.refresh_rate(now);
    }

    // Clone the Arc lists so the registry locks are not held while reading counters.
    fn listeners(&self) -> Vec<Arc<ListenerStats>> {
        lock(&self.listeners).clone()
    }

    /// The backends to show, each with since when the topology no longer names it.
    fn backends(&self) -> Vec<(Arc<BackendStats>, Option<Instant>)> {
        lock(&self.backends)
            .iter()
            .map(|e| (Arc::clone(&e.stats), e.left_at))
            .collect()
    }

    /// Copies everything the page shows.
    pub fn snapshot(&self) -> Snapshot {
        let now = Instant::now();
        let now_ms = unix_millis();
        let sentinels = lock(&self.sentinels).clone();
        let sentinels: Vec<SentinelSnapshot> =
            sentinels.iter().map(|s| s.snapshot(now_ms)).collect();
        let topology_status = lock(&self.topology_problem)
            .clone()
            .unwrap_or_else(|| topology_status(&self.mode, &sentinels));
        let cluster = (self.mode == "cluster").then(|| self.cluster.snapshot(now));
        let mut backends: Vec<BackendSnapshot> = self
            .backends()
            .iter()
            .map(|(b, left_at)| BackendSnapshot {
                left_topology_age_ms: left_at.map(|at| {
                    let age = now.saturating_duration_since(at).as_millis();
                    u64::try_from(age).unwrap_or(u64::MAX)
                }),
                ..b.snapshot(now, now_ms)
            })
            .collect();
        if let Some(c) = &cluster {
            roles_from_slot_map(&mut backends, &c.view);
        }
        Snapshot {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            now_ms,
            started_ms: self.started_ms,
            uptime_secs: now.saturating_duration_since(self.started_at).as_secs(),
            mode: self.mode.clone(),
            master_name: self.master_name.clone(),
            master: lock(&self.master).clone(),
            listeners: self.listeners().iter().map(|l| l.snapshot(now)).collect(),
            backends,
            sentinels,
            topology_status,
            failovers_total: self.failovers_total.load(Ordering::Relaxed),
            failovers: lock(&self.failovers).iter().rev().cloned().collect(),
            hold: self.hold.snapshot(),
            cluster,
            auth: self.auth.snapshot(),
        }
    }
}

/// Cluster mode runs no role health checks: a backend's role is the one the slot map gives it
/// (a node the map no longer names stays `unknown`).
fn roles_from_slot_map(backends: &mut [BackendSnapshot], view: &ClusterView) {
    for b in backends {
        if let Some(node) = view.nodes.iter().find(|n| n.addr == b.addr) {
            b.role = match node.role.as_str() {
                "master" => Role::Master,
                _ => Role::Replica,
            };
        }
    }
}

/// The topology's source in words, for the page and `/stats.json`.
fn topology_status(mode: &str, sentinels: &[SentinelSnapshot]) -> String {
    if mode == "cluster" {
        return "following the cluster's slot map (CLUSTER SLOTS)".to_owned();
    }
    if mode != "sentinel" {
        return "static servers, roles from health checks".to_owned();
    }
    let up = sentinels.iter().filter(|s| s.connected).count();
    match (up, sentinels.len()) {
        (0, _) => "ALL SENTINELS UNREACHABLE: serving the last known topology, checked by health checks only"
            .to_owned(),
        (u, n) if u == n => format!("following {n} sentinels"),
        (u, n) => format!("{u} of {n} sentinels reachable"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backend_and_sentinel_are_get_or_create() {
        let stats = Stats::new("sentinel", Some("mymaster"));
        let a = stats.backend("127.0.0.1:6391");
        let b = stats.backend("127.0.0.1:6391");
        assert!(Arc::ptr_eq(&a, &b));
        stats.backend("127.0.0.1:6392");
        let s1 = stats.sentinel("127.0.0.1:26379");
        let s2 = stats.sentinel("127.0.0.1:26379");
        assert!(Arc::ptr_eq(&s1, &s2));
        let snap = stats.snapshot();
        assert_eq!(snap.backends.len(), 2);
        assert_eq!(snap.sentinels.len(), 1);
        assert_eq!(snap.mode, "sentinel");
        assert_eq!(snap.master_name.as_deref(), Some("mymaster"));
    }

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

    #[test]
    fn failover_history_keeps_the_last_fifty_newest_first() {
        let stats = Stats::new("sentinel", Some("mymaster"));
        for i in 0..60 {
            let old = format!("10.0.0.{i}:6379");
            let new = format!("10.0.0.{}:6379", i + 1);
            stats.record_failover(Some(&old), &new, "+switch-master");
        }
        let snap = stats.snapshot();
        assert_eq!(snap.failovers_total, 60);
        assert_eq!(snap.failovers.len(), FAILOVER_HISTORY);
        assert_eq!(snap.failovers[0].new_master, "10.0.0.60:6379");
        assert_eq!(snap.failovers[49].new_master, "10.0.0.11:6379");
    }

    #[test]
    fn master_drives_health() {
        let stats = Stats::new("static", None);
        assert!(!stats.snapshot().healthy());
        stats.set_master(Some("127.0.0.1:6391"));
        let snap = stats.snapshot();
        assert!(snap.healthy());
        assert_eq!(snap.master.as_deref(), Some("127.0.0.1:6391"));
        stats.set_master(None);
        assert!(!stats.snapshot().healthy());
    }

    #[test]
    fn listeners_are_registered_and_counted() {
        let stats = Stats::new("static", None);
        let l = stats.listener("redis", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_opened();
        l.command();
        stats.refresh_rates();
        let snap = stats.snapshot();
        assert_eq!(snap.listeners.len(), 1);
        assert_eq!(snap.listeners[0].commands, 1);
        assert_eq!(snap.listeners[0].current_connections, 1);
    }

    #[test]
    fn cluster_mode_takes_backend_roles_from_the_slot_map() {
        let node = |addr: &str, role: &str| ClusterNodeSnapshot {
            addr: addr.into(),
            role: role.into(),
            master: (role == "replica").then(|| "127.0.0.1:7001".into()),
            slots: 16384,
            ranges: "0-16383".into(),
        };
        let stats = Stats::new("cluster", None);
        for addr in ["127.0.0.1:7001", "127.0.0.1:7004", "127.0.0.1:7009"] {
            stats.backend(addr);
        }
        stats.cluster().refreshed(Some(ClusterView {
            slots_served: 16384,
            nodes: vec![
                node("127.0.0.1:7001", "master"),
                node("127.0.0.1:7004", "replica"),
            ],
            ..ClusterView::default()
        }));
        let snap = stats.snapshot();
        let roles: Vec<Role> = snap.backends.iter().map(|b| b.role).collect();
        assert_eq!(roles, [Role::Master, Role::Replica, Role::Unknown]);
        assert!(snap.healthy() && snap.master.is_none());
        assert!(Stats::new("static", None).snapshot().cluster.is_none());
    }

    #[test]
    fn stats_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Stats>();
        assert_send_sync::<ListenerStats>();
        assert_send_sync::<BackendStats>();
        assert_send_sync::<SentinelStats>();
    }
}
