//! Requests held while there is no master to write to: the memory bound and the counters.

use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

/// Held requests, over all sessions. The byte gauge is also the `max_held_bytes` bound, so it is
/// updated with a compare-and-swap: two sessions cannot both take the last free bytes.
#[derive(Debug, Default)]
pub struct HoldStats {
    bytes: AtomicU64,
    now: AtomicU64,
    held_total: AtomicU64,
    released_total: AtomicU64,
    expired_total: AtomicU64,
    refused_total: AtomicU64,
}

/// [`HoldStats`] at snapshot time.
#[derive(Serialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct HoldSnapshot {
    /// Requests held right now.
    pub held_now: u64,
    /// Their bytes.
    pub held_bytes: u64,
    /// Requests ever held.
    pub held_total: u64,
    /// Held requests sent on to a master.
    pub released_total: u64,
    /// Held requests answered `-TRYAGAIN` after `failover.hold_ms`.
    pub expired_total: u64,
    /// Requests refused at once because `failover.max_held_bytes` was reached.
    pub refused_total: u64,
}

impl HoldSnapshot {
    /// What the totals grew by since `before` (the gauges are taken as they are now).
    pub fn since(&self, before: &HoldSnapshot) -> HoldSnapshot {
        HoldSnapshot {
            held_now: self.held_now,
            held_bytes: self.held_bytes,
            held_total: self.held_total.saturating_sub(before.held_total),
            released_total: self.released_total.saturating_sub(before.released_total),
            expired_total: self.expired_total.saturating_sub(before.expired_total),
            refused_total: self.refused_total.saturating_sub(before.refused_total),
        }
    }
}

impl HoldStats {
    /// Takes `bytes` of the budget for `count` requests; false (and counted as refused) when
    /// that would pass `max_bytes`.
    pub fn try_hold(&self, bytes: usize, count: usize, max_bytes: usize) -> bool {
        let (bytes, count, max) = (bytes as u64, count as u64, max_bytes as u64);
        let taken = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                cur.checked_add(bytes).filter(|&n| n <= max)
            })
            .is_ok();
        if taken {
            self.now.fetch_add(count, Ordering::Relaxed);
            self.held_total.fetch_add(count, Ordering::Relaxed);
        } else {
            self.refused_total.fetch_add(count, Ordering::Relaxed);
        }
        taken
    }

    /// Held requests leave the hold: sent on (`released`) or answered with an error.
    pub fn leave(&self, bytes: usize, count: usize, released: bool) {
        let count = count as u64;
        let _ = self
            .bytes
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |cur| {
                Some(cur.saturating_sub(bytes as u64))
            });
        let _ = self
            .now
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |cur| {
                Some(cur.saturating_sub(count))
            });
        let total = if released {
            &self.released_total
        } else {
            &self.expired_total
        };
        total.fetch_add(count, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn snapshot(&self) -> HoldSnapshot {
        HoldSnapshot {
            held_now: self.now.load(Ordering::Relaxed),
            held_bytes: self.bytes.load(Ordering::Relaxed),
            held_total: self.held_total.load(Ordering::Relaxed),
            released_total: self.released_total.load(Ordering::Relaxed),
            expired_total: self.expired_total.load(Ordering::Relaxed),
            refused_total: self.refused_total.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_byte_budget_is_a_hard_bound() {
        let h = HoldStats::default();
        assert!(h.try_hold(60, 1, 100));
        assert!(!h.try_hold(41, 1, 100), "61 + 41 > 100");
        assert!(h.try_hold(40, 2, 100));
        h.leave(60, 1, true);
        h.leave(40, 2, false);
        let s = h.snapshot();
        assert_eq!(
            s,
            HoldSnapshot {
                held_now: 0,
                held_bytes: 0,
                held_total: 3,
                released_total: 1,
                expired_total: 2,
                refused_total: 1,
            }
        );
    }
}
