//! Stats registry, its point-in-time [`Snapshot`], and the HTTP stats page on :8404.
//!
//! The data path holds `Arc`s to [`ListenerStats`] and [`BackendStats`] and only touches
//! atomics. Registration, failovers and snapshots take `std::sync::Mutex`es that are never
//! held across an `.await` and never on the per-command path.

pub mod admin;
mod auth;
mod cluster;
mod commands;
mod counters;
mod errors;
mod failovers;
mod histogram;
mod hold;
mod http;
mod membership;
mod prometheus;
mod reloads;
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
pub use commands::{CommandSnapshot, CommandStats};
pub use counters::{
    BackendSnapshot, BackendState, BackendStats, LatencySnapshot, ListenerSnapshot, ListenerStats,
    ReplyTimer, Role, SentinelSnapshot, SentinelStats,
};
pub use errors::ErrorReason;
pub use failovers::{FailoverRecord, FAILOVER_HISTORY};
pub use histogram::{Histogram, HistogramSnapshot, EXPORTED_BOUNDS_US};
pub use hold::{HoldSnapshot, HoldStats};
pub use http::{serve, Admin, Lifecycle};
pub use prometheus::render_prometheus;
pub use reloads::{ReloadRecord, ReloadRequest, ReloadSender, ReloadSnapshot, ReloadStats};
pub use render::{render_html, render_json};

use counters::{lock, unix_millis};
use membership::BackendEntry;

/// How long a backend that left the topology stays on the page, in `/stats.json` and
/// `/metrics` by default (`stats_forget_after_secs`).
pub const FORGET_AFTER: Duration = Duration::from_secs(60);

/// The stats registry: one per proxy, shared by the data path, topology tasks and the
/// stats page.
#[derive(Debug)]
pub struct Stats {
    mode: String,
    master_name: Mutex<Option<String>>,
    started_at: Instant,
    started_ms: u64,
    master: Mutex<Option<String>>,
    topology_problem: Mutex<Option<String>>,
    write_fence: Mutex<Option<String>>,
    sentinel_loss: Mutex<Option<&'static str>>,
    listeners: Mutex<Vec<Arc<ListenerStats>>>,
    commands: Arc<CommandStats>,
    backends: Mutex<Vec<BackendEntry>>,
    forget_after: Duration,
    sentinels: Mutex<Vec<Arc<SentinelStats>>>,
    failovers: Mutex<VecDeque<FailoverRecord>>,
    failovers_total: AtomicU64,
    hold: Arc<HoldStats>,
    cluster: Arc<ClusterStats>,
    auth: Arc<AuthStats>,
    reloads: ReloadStats,
    /// The client sessions' and the background tasks' trackers, counted in snapshots.
    tasks: Mutex<Option<(tokio_util::task::TaskTracker, tokio_util::task::TaskTracker)>>,
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
    /// Why writes are held off the master right now (a failover under way, or a majority of the
    /// sentinels not heard from), `None` when they are not.
    pub writes_fenced: Option<String>,
    /// Sentinel mode: `[failover] on_sentinel_loss` (`fence-writes` or `serve`).
    pub on_sentinel_loss: Option<String>,
    /// Client-facing listeners.
    pub listeners: Vec<ListenerSnapshot>,
    /// The commands clients called, over every listener, most called first.
    pub commands: Vec<CommandSnapshot>,
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
    /// Configuration reloads.
    pub reloads: ReloadSnapshot,
    /// Tasks alive now.
    pub tasks: TaskCounts,
}

/// Tasks alive at snapshot time (what a long run watches for leaks).
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Client sessions.
    pub sessions: u64,
    /// Everything else: listeners, topology, health checks, backend connections' tasks.
    pub background: u64,
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
            master_name: Mutex::new(master_name.map(str::to_owned)),
            started_at: Instant::now(),
            started_ms: unix_millis(),
            master: Mutex::new(None),
            topology_problem: Mutex::new(None),
            write_fence: Mutex::new(None),
            sentinel_loss: Mutex::new(None),
            listeners: Mutex::new(Vec::new()),
            commands: Arc::default(),
            backends: Mutex::new(Vec::new()),
            forget_after,
            sentinels: Mutex::new(Vec::new()),
            failovers: Mutex::new(VecDeque::with_capacity(FAILOVER_HISTORY)),
            failovers_total: AtomicU64::new(0),
            hold: Arc::new(HoldStats::default()),
            cluster: Arc::new(ClusterStats::default()),
            auth: Arc::new(AuthStats::default()),
            reloads: ReloadStats::default(),
            tasks: Mutex::new(None),
        })
    }

    /// The authentication counters (shared with the sessions).
    pub fn auth(&self) -> Arc<AuthStats> {
        Arc::clone(&self.auth)
    }

    /// Counts the tasks of these trackers in every snapshot.
    pub fn count_tasks(
        &self,
        sessions: tokio_util::task::TaskTracker,
        background: tokio_util::task::TaskTracker,
    ) {
        *lock(&self.tasks) = Some((sessions, background));
    }

    fn task_counts(&self) -> TaskCounts {
        lock(&self.tasks)
            .as_ref()
            .map_or_else(TaskCounts::default, |(sessions, background)| TaskCounts {
                sessions: sessions.len() as u64,
                background: background.len() as u64,
            })
    }

    /// The reload counters.
    pub fn reloads(&self) -> &ReloadStats {
        &self.reloads
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
        let stats = Arc::new(ListenerStats::counting_commands_in(
            name,
            addr,
            Arc::clone(&self.commands),
        ));
        lock(&self.listeners).push(Arc::clone(&stats));
        stats
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

    /// The name of the master group followed now (Sentinel mode: a reload may change it).
    pub fn set_master_name(&self, name: &str) {
        *lock(&self.master_name) = Some(name.to_owned());
    }

    /// Drops the link state of a sentinel no longer configured (a reload).
    pub fn forget_sentinel(&self, addr: &str) {
        lock(&self.sentinels).retain(|s| s.addr() != addr);
    }

    /// Why writes are fenced off the master now (a failover under way, the sentinels' majority
    /// lost), or `None`.
    pub fn set_write_fence(&self, cause: Option<String>) {
        *lock(&self.write_fence) = cause;
    }

    /// The `on_sentinel_loss` policy in force (Sentinel mode).
    pub fn set_sentinel_loss_policy(&self, policy: &'static str) {
        *lock(&self.sentinel_loss) = Some(policy);
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
            master_name: lock(&self.master_name).clone(),
            master: lock(&self.master).clone(),
            listeners: self.listeners().iter().map(|l| l.snapshot(now)).collect(),
            commands: self.commands.snapshot(),
            backends,
            sentinels,
            topology_status,
            writes_fenced: lock(&self.write_fence).clone(),
            on_sentinel_loss: lock(&self.sentinel_loss).map(str::to_owned),
            failovers_total: self.failovers_total.load(Ordering::Relaxed),
            failovers: lock(&self.failovers).iter().rev().cloned().collect(),
            hold: self.hold.snapshot(),
            cluster,
            auth: self.auth.snapshot(),
            reloads: self.reloads.snapshot(),
            tasks: self.task_counts(),
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
