//! The counters and state of one Redis backend: its role, health, latency and replication.

use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde::Serialize;

use super::{gauge, lock, round2, unix_millis, LatencySnapshot, RateMeter, Role};
use crate::stats::histogram::Histogram;

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
            latency: LatencySnapshot::of(&self.latency.snapshot()),
            replication_offset: has_replication.then(|| self.repl_offset.load(Ordering::Relaxed)),
            replication_link_up: has_replication.then(|| self.repl_link_up.load(Ordering::Relaxed)),
            left_topology_age_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
