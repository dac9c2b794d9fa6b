//! Polling assertions with a deadline (linkerd `assert_eventually!`), so tests never sleep to assert.
//!
//! Every deadline the harness uses goes through [`scaled`], which multiplies it by the float in
//! `HAPROXY_RS_TEST_PATIENCE` (default 1.0): a slow CI box sets `HAPROXY_RS_TEST_PATIENCE=3`.

use std::time::Duration;

use tokio::time::Instant;

/// Environment variable holding the patience multiplier.
pub const PATIENCE_ENV: &str = "HAPROXY_RS_TEST_PATIENCE";

/// How long [`eventually!`](crate::eventually) waits between two polls of its condition.
pub const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// The patience multiplier from `HAPROXY_RS_TEST_PATIENCE`; 1.0 when unset or not a positive number.
pub fn patience() -> f64 {
    std::env::var(PATIENCE_ENV)
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|p| p.is_finite() && *p > 0.0)
        .unwrap_or(1.0)
}

/// `d` multiplied by the patience multiplier.
pub fn scaled(d: Duration) -> Duration {
    d.mul_f64(patience())
}

/// A deadline already scaled by the patience multiplier; what [`eventually!`](crate::eventually) polls against.
#[derive(Debug, Clone, Copy)]
pub struct Deadline {
    at: Instant,
    budget: Duration,
}

impl Deadline {
    /// A deadline `d` (scaled by the patience multiplier) from now.
    pub fn after(d: Duration) -> Self {
        let budget = scaled(d);
        Self {
            at: Instant::now() + budget,
            budget,
        }
    }

    /// The scaled budget this deadline was created with.
    pub fn budget(&self) -> Duration {
        self.budget
    }

    /// Time left before the deadline (zero once passed).
    pub fn remaining(&self) -> Duration {
        self.at.saturating_duration_since(Instant::now())
    }

    /// True once the deadline has passed.
    pub fn expired(&self) -> bool {
        Instant::now() >= self.at
    }

    /// Sleeps one poll interval, or less if the deadline comes first.
    pub async fn tick(&self) {
        tokio::time::sleep(POLL_INTERVAL.min(self.remaining())).await;
    }
}

/// Polls an async condition every 20 ms until it is true; panics naming the condition when `$deadline`
/// (a `Duration`, scaled by `HAPROXY_RS_TEST_PATIENCE`) passes first.
///
/// The condition is an expression that may use `.await`; each evaluation is itself bounded by the time left,
/// so a condition stuck on a stopped server still fails at the deadline instead of hanging the test.
///
/// ```ignore
/// eventually!(Duration::from_secs(5), replica.commandstats("set").await >= 1);
/// eventually!(Duration::from_secs(5), get(&mut c).await == "v", "replica never saw the write");
/// ```
#[macro_export]
macro_rules! eventually {
    ($deadline:expr, $cond:expr $(,)?) => {
        $crate::eventually!($deadline, $cond, "{}", stringify!($cond))
    };
    ($deadline:expr, $cond:expr, $($msg:tt)+) => {{
        let deadline = $crate::harness::eventually::Deadline::after($deadline);
        let mut polls: u64 = 0;
        loop {
            polls += 1;
            match ::tokio::time::timeout(deadline.remaining(), async { $cond }).await {
                Ok(true) => break,
                Ok(false) if !deadline.expired() => deadline.tick().await,
                Ok(false) => panic!(
                    "condition not true after {:?} ({} polls): {}",
                    deadline.budget(),
                    polls,
                    format_args!($($msg)+)
                ),
                Err(_) => panic!(
                    "condition still evaluating at the deadline of {:?} ({} polls): {}",
                    deadline.budget(),
                    polls,
                    format_args!($($msg)+)
                ),
            }
        }
    }};
}
