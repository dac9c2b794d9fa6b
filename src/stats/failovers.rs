//! The history of master changes: what each failover held, and how it was seen.

use std::sync::atomic::Ordering;

use serde::Serialize;

use super::counters::{lock, unix_millis};
use super::{HoldSnapshot, Stats};

/// How many failovers the history keeps.
pub const FAILOVER_HISTORY: usize = 50;

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

impl Stats {
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
