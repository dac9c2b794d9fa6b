//! Per-listener, per-backend and per-sentinel counters: atomics on the data path.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::histogram::Histogram;
// What a server is: the routing table's servers carry it, the stats show it.
pub use crate::router::Role;

// Every atomic here uses `Relaxed`: each is an independent statistic and no other memory is
// published through it, so readers only need each value to be eventually current.

/// Milliseconds since the Unix epoch (0 if the clock is before 1970).
pub(crate) fn unix_millis() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Locks a mutex, ignoring poisoning: every value guarded here stays consistent even if a
/// holder panicked (the guarded sections only assign whole values).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Reads a gauge kept as `AtomicI64`, clamping a transient negative (close counted before
/// open on another core) to zero.
fn gauge(v: &AtomicI64) -> u64 {
    u64::try_from(v.load(Ordering::Relaxed)).unwrap_or(0)
}

/// Shortest window over which an ops/s rate is computed; shorter reads reuse the last rate.
const RATE_WINDOW: Duration = Duration::from_secs(1);

/// Turns a monotonically increasing counter into a per-second rate.
///
/// Only touched at snapshot time or by the 1 s ticker, never by the data path, so it sits
/// behind a `std::sync::Mutex` held for a few instructions.
#[derive(Debug)]
pub(crate) struct RateMeter {
    prev_count: u64,
    prev_at: Instant,
    rate: Option<f64>,
}

impl RateMeter {
    pub(crate) fn new() -> Mutex<Self> {
        Mutex::new(Self {
            prev_count: 0,
            prev_at: Instant::now(),
            rate: None,
        })
    }

    /// Takes a sample if a full window has passed; returns the latest rate. Before the first
    /// full window it reports the count over one window (a burst in the first milliseconds
    /// must not read as millions of ops/s).
    pub(crate) fn update(&mut self, count: u64, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(self.prev_at).as_secs_f64();
        let delta = count.saturating_sub(self.prev_count) as f64;
        if elapsed >= RATE_WINDOW.as_secs_f64() {
            let rate = delta / elapsed;
            self.rate = Some(rate);
            self.prev_count = count;
            self.prev_at = now;
            rate
        } else if let Some(rate) = self.rate {
            rate
        } else {
            delta / RATE_WINDOW.as_secs_f64()
        }
    }
}

/// Round to two decimals so JSON and the page stay readable.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

/// Counters of one client-facing listener.
#[derive(Debug)]
pub struct ListenerStats {
    name: String,
    addr: SocketAddr,
    current: AtomicI64,
    total: AtomicU64,
    commands: AtomicU64,
    errors: AtomicU64,
    output_limit_closes: AtomicU64,
    query_limit_closes: AtomicU64,
    output_total_closes: AtomicU64,
    tx_too_large: AtomicU64,
    idle_closes: AtomicU64,
    rejected: AtomicU64,
    output_peak: AtomicU64,
    pubsub: AtomicI64,
    rate: Mutex<RateMeter>,
}

/// A listener's counters at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct ListenerSnapshot {
    /// Listener name from the config.
    pub name: String,
    /// Bound address.
    pub addr: String,
    /// Client connections open now.
    pub current_connections: u64,
    /// Client connections accepted since start.
    pub total_connections: u64,
    /// Commands received since start.
    pub commands: u64,
    /// Commands answered with an error since start.
    pub errors: u64,
    /// Clients disconnected for letting replies pile up past `client_output_buffer_limit_bytes`
    /// (Redis's `client_output_buffer_limit_disconnections`).
    pub output_buffer_limit_disconnections: u64,
    /// Clients closed for sending more than `client_query_buffer_limit` of input that does not
    /// form a complete request (Redis's `client_query_buffer_limit_disconnections`).
    pub query_buffer_limit_disconnections: u64,
    /// Clients disconnected, largest output buffer first, because the replies waiting for all
    /// clients together passed `max_output_bytes_total` (Redis's `evicted_clients`).
    pub output_total_limit_disconnections: u64,
    /// Cluster-mode transactions aborted (`EXEC` answered `-EXECABORT`) for queueing more than
    /// `max_multi_commands` commands or `max_multi_bytes` bytes.
    pub transactions_too_large: u64,
    /// Clients closed after `client_timeout_secs` idle.
    pub idle_timeouts: u64,
    /// Clients refused because `max_clients` were connected (Redis's `rejected_connections`).
    pub rejected_connections: u64,
    /// Most reply bytes that waited for one client at once, over the clients that have left.
    pub output_buffer_peak_bytes: u64,
    /// Clients subscribed now (Redis's `pubsub_clients`).
    pub pubsub_clients: u64,
    /// Commands per second over the last window.
    pub ops_per_sec: f64,
}

impl ListenerStats {
    pub(crate) fn new(name: &str, addr: SocketAddr) -> Self {
        Self {
            name: name.to_owned(),
            addr,
            current: AtomicI64::new(0),
            total: AtomicU64::new(0),
            commands: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            output_limit_closes: AtomicU64::new(0),
            query_limit_closes: AtomicU64::new(0),
            output_total_closes: AtomicU64::new(0),
            tx_too_large: AtomicU64::new(0),
            idle_closes: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            output_peak: AtomicU64::new(0),
            pubsub: AtomicI64::new(0),
            rate: RateMeter::new(),
        }
    }

    /// A client connected.
    pub fn connection_opened(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A client connection ended.
    pub fn connection_closed(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    /// One command received from a client.
    pub fn command(&self) {
        self.commands.fetch_add(1, Ordering::Relaxed);
    }

    /// One command answered with an error (or a protocol error).
    pub fn error(&self) {
        self.errors.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was disconnected for not reading its replies (output buffer limit).
    pub fn output_limit_reached(&self) {
        self.output_limit_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was closed for its query buffer (`client_query_buffer_limit`).
    pub fn query_buffer_limit_reached(&self) {
        self.query_limit_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client was disconnected to bring the replies of all clients under
    /// `max_output_bytes_total`.
    pub fn output_total_limit_reached(&self) {
        self.output_total_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A cluster-mode transaction passed `max_multi_commands` or `max_multi_bytes` (counted
    /// once, when it does).
    pub fn transaction_too_large(&self) {
        self.tx_too_large.fetch_add(1, Ordering::Relaxed);
    }

    /// A session ended whose client had at most `bytes` of replies waiting at once.
    pub fn record_output_peak(&self, bytes: usize) {
        self.output_peak.fetch_max(bytes as u64, Ordering::Relaxed);
    }

    /// An idle client was closed (`client_timeout_secs`).
    pub fn idle_timeout(&self) {
        self.idle_closes.fetch_add(1, Ordering::Relaxed);
    }

    /// A client entered (`1`) or left (`-1`) subscriber mode.
    pub fn pubsub_client(&self, delta: i64) {
        self.pubsub.fetch_add(delta, Ordering::Relaxed);
    }

    /// A client was refused: `max_clients` were connected.
    pub fn rejected(&self) {
        self.rejected.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn refresh_rate(&self, now: Instant) -> f64 {
        let commands = self.commands.load(Ordering::Relaxed);
        lock(&self.rate).update(commands, now)
    }

    pub(crate) fn snapshot(&self, now: Instant) -> ListenerSnapshot {
        ListenerSnapshot {
            name: self.name.clone(),
            addr: self.addr.to_string(),
            current_connections: gauge(&self.current),
            total_connections: self.total.load(Ordering::Relaxed),
            commands: self.commands.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            output_buffer_limit_disconnections: self.output_limit_closes.load(Ordering::Relaxed),
            query_buffer_limit_disconnections: self.query_limit_closes.load(Ordering::Relaxed),
            output_total_limit_disconnections: self.output_total_closes.load(Ordering::Relaxed),
            transactions_too_large: self.tx_too_large.load(Ordering::Relaxed),
            idle_timeouts: self.idle_closes.load(Ordering::Relaxed),
            rejected_connections: self.rejected.load(Ordering::Relaxed),
            output_buffer_peak_bytes: self.output_peak.load(Ordering::Relaxed),
            pubsub_clients: gauge(&self.pubsub),
            ops_per_sec: round2(self.refresh_rate(now)),
        }
    }
}

/// Health of a backend as the page shows it.
#[derive(Serialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "UPPERCASE")]
pub enum BackendState {
    /// `set_up` was never called.
    Unknown,
    /// Reachable.
    Up,
    /// Unreachable or marked down.
    Down,
}

impl BackendState {
    /// `UP`, `DOWN` or `UNKNOWN`.
    pub fn as_str(self) -> &'static str {
        match self {
            BackendState::Unknown => "UNKNOWN",
            BackendState::Up => "UP",
            BackendState::Down => "DOWN",
        }
    }
}

const STATE_UNKNOWN: u8 = 0;
const STATE_UP: u8 = 1;
const STATE_DOWN: u8 = 2;

/// Counters and state of one Redis backend.
#[derive(Debug)]
pub struct BackendStats {
    addr: String,
    role: AtomicU8,
    state: AtomicU8,
    last_change_ms: AtomicU64,
    has_replication: AtomicBool,
    repl_offset: AtomicU64,
    repl_link_up: AtomicBool,
    current: AtomicI64,
    total: AtomicU64,
    ops: AtomicU64,
    errors: AtomicU64,
    latency: Histogram,
    rate: Mutex<RateMeter>,
}

/// Latency summary of one backend, in microseconds.
#[derive(Serialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LatencySnapshot {
    /// Commands measured.
    pub count: u64,
    /// Sum of all latencies.
    pub sum_us: u64,
    /// Median (`None` before the first command).
    pub p50_us: Option<u64>,
    /// 90th percentile.
    pub p90_us: Option<u64>,
    /// 99th percentile.
    pub p99_us: Option<u64>,
    /// Upper bound of the slowest bucket.
    pub max_us: Option<u64>,
}

/// A backend's counters and state at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq)]
pub struct BackendSnapshot {
    /// `host:port`.
    pub addr: String,
    /// Master, replica or unknown.
    pub role: Role,
    /// UP, DOWN or UNKNOWN.
    pub state: BackendState,
    /// When the state last changed (unix millis), if it ever was set.
    pub last_change_ms: Option<u64>,
    /// Milliseconds since that change.
    pub last_change_age_ms: Option<u64>,
    /// Proxy-to-backend connections open now.
    pub current_connections: u64,
    /// Proxy-to-backend connections opened since start.
    pub total_connections: u64,
    /// Commands completed.
    pub ops: u64,
    /// Commands that failed.
    pub errors: u64,
    /// Commands per second over the last window.
    pub ops_per_sec: f64,
    /// Command latency since start.
    pub latency: LatencySnapshot,
    /// Replication offset, once reported.
    pub replication_offset: Option<u64>,
    /// Replication link status (`master_link_status:up`), once reported.
    pub replication_link_up: Option<bool>,
    /// Milliseconds since the topology stopped naming it (it is forgotten
    /// `stats_forget_after_secs` after that); `None` while the topology names it, up or down.
    pub left_topology_age_ms: Option<u64>,
}

fn micros(d: Option<Duration>) -> Option<u64> {
    d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

impl BackendStats {
    pub(crate) fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            role: AtomicU8::new(Role::Unknown.to_u8()),
            state: AtomicU8::new(STATE_UNKNOWN),
            last_change_ms: AtomicU64::new(0),
            has_replication: AtomicBool::new(false),
            repl_offset: AtomicU64::new(0),
            repl_link_up: AtomicBool::new(false),
            current: AtomicI64::new(0),
            total: AtomicU64::new(0),
            ops: AtomicU64::new(0),
            errors: AtomicU64::new(0),
            latency: Histogram::new(),
            rate: RateMeter::new(),
        }
    }

    /// The address this entry was registered under.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Records the backend's current role.
    pub fn set_role(&self, role: Role) {
        self.role.store(role.to_u8(), Ordering::Relaxed);
    }

    /// Marks the backend up or down; the time is recorded only when the state changes.
    pub fn set_up(&self, up: bool) {
        let new = if up { STATE_UP } else { STATE_DOWN };
        if self.state.swap(new, Ordering::Relaxed) != new {
            self.last_change_ms.store(unix_millis(), Ordering::Relaxed);
        }
    }

    /// Records the replication offset and link status (from `INFO replication`).
    pub fn set_replication(&self, offset: u64, link_up: bool) {
        self.repl_offset.store(offset, Ordering::Relaxed);
        self.repl_link_up.store(link_up, Ordering::Relaxed);
        self.has_replication.store(true, Ordering::Relaxed);
    }

    /// A connection to the backend was opened.
    pub fn connection_opened(&self) {
        self.current.fetch_add(1, Ordering::Relaxed);
        self.total.fetch_add(1, Ordering::Relaxed);
    }

    /// A connection to the backend was closed.
    pub fn connection_closed(&self) {
        self.current.fetch_sub(1, Ordering::Relaxed);
    }

    /// One command completed, with its round-trip latency; `ok` is false on failure.
    pub fn record(&self, latency: Duration, ok: bool) {
        self.ops.fetch_add(1, Ordering::Relaxed);
        if !ok {
            self.errors.fetch_add(1, Ordering::Relaxed);
        }
        self.latency.record(latency);
    }

    pub(crate) fn refresh_rate(&self, now: Instant) -> f64 {
        let ops = self.ops.load(Ordering::Relaxed);
        lock(&self.rate).update(ops, now)
    }

    pub(crate) fn snapshot(&self, now: Instant, now_ms: u64) -> BackendSnapshot {
        let state = match self.state.load(Ordering::Relaxed) {
            STATE_UP => BackendState::Up,
            STATE_DOWN => BackendState::Down,
            _ => BackendState::Unknown,
        };
        let last_change_ms = match self.last_change_ms.load(Ordering::Relaxed) {
            0 => None,
            ms => Some(ms),
        };
        let hist = self.latency.snapshot();
        let has_replication = self.has_replication.load(Ordering::Relaxed);
        BackendSnapshot {
            addr: self.addr.clone(),
            role: Role::from_u8(self.role.load(Ordering::Relaxed)),
            state,
            last_change_ms,
            last_change_age_ms: last_change_ms.map(|ms| now_ms.saturating_sub(ms)),
            current_connections: gauge(&self.current),
            total_connections: self.total.load(Ordering::Relaxed),
            ops: self.ops.load(Ordering::Relaxed),
            errors: self.errors.load(Ordering::Relaxed),
            ops_per_sec: round2(self.refresh_rate(now)),
            latency: LatencySnapshot {
                count: hist.count(),
                sum_us: micros(Some(hist.sum())).unwrap_or(0),
                p50_us: micros(hist.quantile(0.5)),
                p90_us: micros(hist.quantile(0.9)),
                p99_us: micros(hist.quantile(0.99)),
                max_us: micros(hist.max()),
            },
            replication_offset: has_replication.then(|| self.repl_offset.load(Ordering::Relaxed)),
            replication_link_up: has_replication.then(|| self.repl_link_up.load(Ordering::Relaxed)),
            left_topology_age_ms: None,
        }
    }
}

/// Last event a sentinel link delivered.
#[derive(Debug, Default)]
struct LastEvent {
    name: String,
    at_ms: u64,
}

/// State of one connection to a Redis Sentinel.
#[derive(Debug)]
pub struct SentinelStats {
    addr: String,
    connected: AtomicBool,
    connected_change_ms: AtomicU64,
    events: AtomicU64,
    // Sentinel events are rare (a handful per failover), so a std Mutex is fine here and
    // lets us keep the event name; it is never held across an await.
    last_event: Mutex<LastEvent>,
}

/// A sentinel link at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SentinelSnapshot {
    /// `host:port` of the sentinel.
    pub addr: String,
    /// Whether the link is connected now.
    pub connected: bool,
    /// When `connected` last changed (unix millis).
    pub connected_change_ms: Option<u64>,
    /// Events received since start.
    pub events: u64,
    /// Name of the last event (e.g. `+switch-master`).
    pub last_event: Option<String>,
    /// When it arrived (unix millis).
    pub last_event_ms: Option<u64>,
    /// Milliseconds since it arrived.
    pub last_event_age_ms: Option<u64>,
}

impl SentinelStats {
    pub(crate) fn new(addr: &str) -> Self {
        Self {
            addr: addr.to_owned(),
            connected: AtomicBool::new(false),
            connected_change_ms: AtomicU64::new(0),
            events: AtomicU64::new(0),
            last_event: Mutex::new(LastEvent::default()),
        }
    }

    /// The address this entry was registered under.
    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Marks the link connected or not; the time is recorded when it changes.
    pub fn set_connected(&self, up: bool) {
        if self.connected.swap(up, Ordering::Relaxed) != up {
            self.connected_change_ms
                .store(unix_millis(), Ordering::Relaxed);
        }
    }

    /// One event (pub/sub message or topology change) arrived on this link.
    pub fn event(&self, name: &str) {
        self.events.fetch_add(1, Ordering::Relaxed);
        let at_ms = unix_millis();
        let mut last = lock(&self.last_event);
        // Reuse the buffer: no allocation once it is large enough.
        last.name.clear();
        last.name.push_str(name);
        last.at_ms = at_ms;
    }

    pub(crate) fn snapshot(&self, now_ms: u64) -> SentinelSnapshot {
        let (last_event, last_event_ms) = {
            let last = lock(&self.last_event);
            if last.at_ms == 0 {
                (None, None)
            } else {
                (Some(last.name.clone()), Some(last.at_ms))
            }
        };
        SentinelSnapshot {
            addr: self.addr.clone(),
            connected: self.connected.load(Ordering::Relaxed),
            connected_change_ms: match self.connected_change_ms.load(Ordering::Relaxed) {
                0 => None,
                ms => Some(ms),
            },
            events: self.events.load(Ordering::Relaxed),
            last_event,
            last_event_ms,
            last_event_age_ms: last_event_ms.map(|ms| now_ms.saturating_sub(ms)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listener_counts_connections_commands_and_errors() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_opened();
        l.connection_opened();
        l.connection_closed();
        for _ in 0..5 {
            l.command();
        }
        l.error();
        let s = l.snapshot(Instant::now());
        assert_eq!(s.name, "main");
        assert_eq!(s.addr, "127.0.0.1:6380");
        assert_eq!(s.current_connections, 1);
        assert_eq!(s.total_connections, 2);
        assert_eq!(s.commands, 5);
        assert_eq!(s.errors, 1);
    }

    #[test]
    fn unbalanced_close_reads_as_zero_connections() {
        let l = ListenerStats::new("main", "127.0.0.1:6380".parse().expect("addr"));
        l.connection_closed();
        assert_eq!(l.snapshot(Instant::now()).current_connections, 0);
    }

    #[test]
    fn backend_records_ops_errors_latency_and_state() {
        let b = BackendStats::new("127.0.0.1:6391");
        let s = b.snapshot(Instant::now(), unix_millis());
        assert_eq!(s.state, BackendState::Unknown);
        assert_eq!(s.role, Role::Unknown);
        assert_eq!(s.last_change_ms, None);
        assert_eq!(s.replication_offset, None);
        assert_eq!(s.latency.p50_us, None);

        b.set_role(Role::Master);
        b.set_up(true);
        b.set_replication(1234, true);
        b.connection_opened();
        for _ in 0..99 {
            b.record(Duration::from_micros(100), true);
        }
        b.record(Duration::from_millis(10), false);
        let s = b.snapshot(Instant::now(), unix_millis());
        assert_eq!(s.role, Role::Master);
        assert_eq!(s.state, BackendState::Up);
        assert!(s.last_change_ms.is_some());
        assert_eq!(s.current_connections, 1);
        assert_eq!(s.ops, 100);
        assert_eq!(s.errors, 1);
        assert_eq!(s.latency.count, 100);
        assert_eq!(s.latency.sum_us, 99 * 100 + 10_000);
        let p50 = s.latency.p50_us.expect("p50");
        assert!((94..=106).contains(&p50), "p50 {p50}");
        let p99 = s.latency.p99_us.expect("p99");
        assert!((94..=106).contains(&p99), "p99 {p99}");
        assert!(s.latency.max_us.expect("max") >= 10_000);
        assert_eq!(s.replication_offset, Some(1234));
        assert_eq!(s.replication_link_up, Some(true));
    }

    #[test]
    fn backend_state_change_time_moves_only_on_change() {
        let b = BackendStats::new("10.0.0.1:6379");
        b.set_up(false);
        b.last_change_ms.store(42, Ordering::Relaxed);
        b.set_up(false);
        assert_eq!(b.last_change_ms.load(Ordering::Relaxed), 42);
        b.set_up(true);
        assert_ne!(b.last_change_ms.load(Ordering::Relaxed), 42);
        let s = b.snapshot(Instant::now(), unix_millis());
        assert_eq!(s.state, BackendState::Up);
    }

    #[test]
    fn rate_meter_reports_ops_per_second_per_window() {
        let start = Instant::now();
        let mut m = RateMeter {
            prev_count: 0,
            prev_at: start,
            rate: None,
        };
        // Inside the first window: the count so far, over one window.
        assert_eq!(m.update(50, start + Duration::from_millis(1)), 50.0);
        assert_eq!(m.update(200, start + Duration::from_secs(2)), 100.0);
        // Inside the next window the last full-window rate is kept.
        assert_eq!(m.update(900, start + Duration::from_millis(2500)), 100.0);
        assert_eq!(m.update(1200, start + Duration::from_secs(4)), 500.0);
        // A counter that did not move gives zero.
        assert_eq!(m.update(1200, start + Duration::from_secs(5)), 0.0);
    }

    #[test]
    fn sentinel_keeps_last_event_and_count() {
        let s = SentinelStats::new("127.0.0.1:26379");
        let snap = s.snapshot(unix_millis());
        assert!(!snap.connected);
        assert_eq!(snap.last_event, None);
        s.set_connected(true);
        s.event("+sdown");
        s.event("+switch-master");
        let snap = s.snapshot(unix_millis());
        assert!(snap.connected);
        assert!(snap.connected_change_ms.is_some());
        assert_eq!(snap.events, 2);
        assert_eq!(snap.last_event.as_deref(), Some("+switch-master"));
        assert!(snap.last_event_ms.is_some());
    }

    #[test]
    fn role_serializes_lowercase_and_state_uppercase() {
        assert_eq!(
            serde_json::to_string(&Role::Replica).expect("json"),
            "\"replica\""
        );
        assert_eq!(
            serde_json::to_string(&BackendState::Down).expect("json"),
            "\"DOWN\""
        );
    }
}
