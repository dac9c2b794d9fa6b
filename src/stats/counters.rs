//! Per-listener, per-backend and per-sentinel counters: atomics on the data path (`listener`,
//! `backend`, `sentinel`), and what they share: the clock, the lock, gauges and the rate meter.

mod backend;
mod listener;
mod sentinel;

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::histogram::HistogramSnapshot;

pub use backend::{BackendSnapshot, BackendState, BackendStats};
pub use listener::{ListenerSnapshot, ListenerStats, ReplyTimer};
pub use sentinel::{SentinelSnapshot, SentinelStats};
// What a server is: the routing table's servers carry it, the stats show it.
pub use crate::router::Role;

// Every atomic of these counters (here and in the submodules) uses `Relaxed`: each is an
// independent statistic and no other memory is published through it, so readers only need each
// value to be eventually current.

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

/// Latency of a listener's or a backend's commands since start, in microseconds.
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
    /// `/metrics`' histogram buckets, cumulative: one per bound of
    /// [`EXPORTED_BOUNDS_US`](super::histogram::EXPORTED_BOUNDS_US), then every command (`+Inf`).
    #[serde(skip)]
    pub buckets: Vec<u64>,
}

impl LatencySnapshot {
    /// The summary of a histogram's copy.
    pub fn of(h: &HistogramSnapshot) -> LatencySnapshot {
        let micros =
            |d: Option<Duration>| d.map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
        LatencySnapshot {
            count: h.count(),
            sum_us: micros(Some(h.sum())).unwrap_or(0),
            p50_us: micros(h.quantile(0.5)),
            p90_us: micros(h.quantile(0.9)),
            p99_us: micros(h.quantile(0.99)),
            max_us: micros(h.max()),
            buckets: h.cumulative(),
        }
    }
}

/// Round to two decimals so JSON and the page stay readable.
fn round2(v: f64) -> f64 {
    (v * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
