//! Calls, errors and latency per command, as Redis's `INFO commandstats`: one counter per
//! command of the built-in table (and one for the rest), so the series `/metrics` exports stay
//! bounded whatever names clients send. Only commands called at least once are reported.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use serde::Serialize;

use super::counters::LatencySnapshot;
use super::histogram::Histogram;
use crate::resp::{command_stats_name, COMMAND_STATS_SLOTS};

/// The per-command counters of the whole proxy (every listener's clients).
#[derive(Debug)]
pub struct CommandStats {
    slots: Box<[CommandCounters]>,
}

#[derive(Debug, Default)]
struct CommandCounters {
    calls: AtomicU64,
    errors: AtomicU64,
    /// Allocated at the command's first call: most commands are never called.
    latency: OnceLock<Box<Histogram>>,
}

/// One command's counters at snapshot time.
#[derive(Serialize, Clone, Debug, PartialEq, Eq)]
pub struct CommandSnapshot {
    /// Lower-case name, `container|sub` for subcommands (`config|get`), `other` for the
    /// commands the built-in table lacks.
    pub name: &'static str,
    /// Calls answered.
    pub calls: u64,
    /// Calls answered with an error.
    pub errors: u64,
    /// From the command read to its reply ready for the client.
    pub latency: LatencySnapshot,
}

impl Default for CommandStats {
    fn default() -> Self {
        Self {
            slots: (0..COMMAND_STATS_SLOTS)
                .map(|_| CommandCounters::default())
                .collect(),
        }
    }
}

impl CommandStats {
    /// One call of the command in `slot` ([`CommandInfo::stats_slot`]) was answered.
    ///
    /// [`CommandInfo::stats_slot`]: crate::resp::CommandInfo::stats_slot
    pub fn answered(&self, slot: u16, latency: Duration, error: bool) {
        let Some(c) = self.slots.get(usize::from(slot)) else {
            return;
        };
        c.calls.fetch_add(1, Ordering::Relaxed);
        if error {
            c.errors.fetch_add(1, Ordering::Relaxed);
        }
        c.latency
            .get_or_init(|| Box::new(Histogram::new()))
            .record(latency);
    }

    /// The commands called so far, most called first (then by name).
    pub fn snapshot(&self) -> Vec<CommandSnapshot> {
        let mut out: Vec<CommandSnapshot> = self
            .slots
            .iter()
            .enumerate()
            .filter_map(|(i, c)| {
                let calls = c.calls.load(Ordering::Relaxed);
                let latency = c.latency.get()?;
                (calls > 0).then(|| CommandSnapshot {
                    name: command_stats_name(u16::try_from(i).unwrap_or(u16::MAX)),
                    calls,
                    errors: c.errors.load(Ordering::Relaxed),
                    latency: LatencySnapshot::of(&latency.snapshot()),
                })
            })
            .collect();
        out.sort_by(|a, b| b.calls.cmp(&a.calls).then(a.name.cmp(b.name)));
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::resp::{CommandTable, COMMAND_STATS_OTHER};

    #[test]
    fn calls_errors_and_latency_are_counted_per_command() {
        let table = CommandTable::builtin();
        let slot = |name: &str| table.get(name).unwrap().stats_slot;
        let s = CommandStats::default();
        assert!(s.snapshot().is_empty(), "nothing called yet");
        s.answered(slot("get"), Duration::from_micros(100), false);
        s.answered(slot("get"), Duration::from_micros(300), true);
        s.answered(slot("config|get"), Duration::from_millis(2), false);
        s.answered(COMMAND_STATS_OTHER, Duration::from_micros(10), false);
        s.answered(u16::MAX, Duration::from_micros(10), false);
        let snap = s.snapshot();
        let names: Vec<&str> = snap.iter().map(|c| c.name).collect();
        assert_eq!(names, ["get", "config|get", "other"]);
        assert_eq!((snap[0].calls, snap[0].errors), (2, 1));
        assert_eq!(snap[0].latency.count, 2);
        assert_eq!(snap[0].latency.sum_us, 400);
        assert_eq!((snap[1].calls, snap[1].errors), (1, 0));
    }
}
