//! What a failover cost: lost acknowledged writes, stale reads, the error window, the time until throughput
//! came back, the worst latency; and the triggers (`SENTINEL FAILOVER`, SIGKILL, a shell command).

use std::fmt::Write as _;
use std::time::Duration;

use bytes::BytesMut;

use super::client::ClientResult;
use super::conn::{Auth, Conn, ConnError};
use super::recorder::FailSpan;
use super::report::TimelineRow;
use super::sentinel;
use super::workload::{parse_tracked_value, push_command, unique_key};
use crate::resp::{parse_value, Value};

/// GETs per batch when reading acknowledged writes back.
const VERIFY_BATCH: usize = 500;
/// Keys of lost writes kept in the report, as examples.
const LOST_SAMPLE: usize = 10;

/// Failover findings.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FailoverReport {
    /// How it was triggered: `planned`, `kill`, `cmd`, or `none` (writes tracked only).
    pub trigger: String,
    /// When, in seconds since measurement began.
    pub at_s: Option<f64>,
    /// The master before.
    pub old_master: Option<String>,
    /// Where acknowledged writes were read back.
    pub verified_on: Option<String>,
    /// Acknowledged tracked writes.
    pub acked_writes: u64,
    /// Acknowledged writes missing (or holding another value) when read back.
    pub lost_writes: u64,
    /// Keys of some lost writes.
    pub lost_sample: Vec<String>,
    /// Tracked reads answered.
    pub reads: u64,
    /// Reads returning a value older than one the same connection had already acknowledged.
    pub stale_reads: u64,
    /// First failed request, seconds since measurement began.
    pub error_window_start_s: Option<f64>,
    /// First success after the last failure (per connection, the latest of them), seconds.
    pub error_window_end_s: Option<f64>,
    /// Mean throughput before the trigger, req/s.
    pub baseline_throughput: f64,
    /// Seconds from the trigger until a whole second reached 90% of the baseline again (after a dip).
    pub recovery_s: Option<f64>,
    /// Highest latency from the trigger to the recovery (or the end), us.
    pub max_latency_us: u64,
}

impl FailoverReport {
    /// The failover part of the final table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let opt = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.3}s"));
        let _ = writeln!(
            s,
            "failover ({}) at {}: master before {}",
            self.trigger,
            opt(self.at_s),
            self.old_master.as_deref().unwrap_or("-")
        );
        let _ = writeln!(
            s,
            "  acknowledged writes {}, lost {} (read back on {})",
            self.acked_writes,
            self.lost_writes,
            self.verified_on.as_deref().unwrap_or("-")
        );
        for k in &self.lost_sample {
            let _ = writeln!(s, "    lost: {k}");
        }
        let _ = writeln!(s, "  reads {}, stale {}", self.reads, self.stale_reads);
        let window = match (self.error_window_start_s, self.error_window_end_s) {
            (Some(a), Some(b)) => format!("{a:.3}s .. {b:.3}s ({:.3}s)", b - a),
            (Some(a), None) => format!("{a:.3}s .. not recovered"),
            _ => "no errors".into(),
        };
        let _ = writeln!(s, "  error window {window}");
        let _ = writeln!(
            s,
            "  throughput before {:.0} req/s, back to 90% after {}, max latency during {}",
            self.baseline_throughput,
            opt(self.recovery_s),
            super::hist::fmt_us(self.max_latency_us)
        );
        s
    }

    /// Fills in the error window, baseline, recovery and max latency from the run's measurements.
    pub fn analyse(&mut self, spans: &[FailSpan], timeline: &[TimelineRow]) {
        let (start, end) = error_window(spans);
        self.error_window_start_s = start.map(|ms| ms as f64 / 1e3);
        self.error_window_end_s = end.map(|ms| ms as f64 / 1e3);
        let Some(at) = self.at_s else {
            return;
        };
        let (baseline, recovery) = recovery(timeline, at);
        self.baseline_throughput = baseline;
        self.recovery_s = recovery;
        let first = at.floor() as u64;
        let last = recovery.map_or(u64::MAX, |r| (at + r).ceil() as u64);
        self.max_latency_us = timeline
            .iter()
            .filter(|r| r.t >= first && r.t <= last)
            .map(|r| r.max_us)
            .max()
            .unwrap_or(0);
    }
}

/// The error window in ms: the first failure of any connection, to the latest first-success-after-a-failure
/// (`None` end: some connection never recovered).
pub fn error_window(spans: &[FailSpan]) -> (Option<u64>, Option<u64>) {
    let start = spans.iter().map(|s| s.first_error_ms).min();
    let end = if spans.iter().any(|s| s.recovered_ms.is_none()) {
        None
    } else {
        spans.iter().filter_map(|s| s.recovered_ms).max()
    };
    (start, end)
}

/// Baseline throughput (mean of the whole seconds before `at`) and the seconds from `at` until the first
/// whole second at 90% of it that follows a second below it (`Some(0.0)`: no dip; `None`: no recovery).
pub fn recovery(timeline: &[TimelineRow], at: f64) -> (f64, Option<f64>) {
    let before: Vec<u64> = timeline
        .iter()
        .filter(|r| (r.t + 1) as f64 <= at)
        .map(|r| r.ops)
        .collect();
    if before.is_empty() {
        return (0.0, None);
    }
    let baseline = before.iter().sum::<u64>() as f64 / before.len() as f64;
    let bar = 0.9 * baseline;
    let after = timeline.iter().filter(|r| (r.t + 1) as f64 > at);
    let mut dipped = false;
    for r in after {
        if (r.ops as f64) < bar {
            dipped = true;
        } else if dipped {
            return (baseline, Some((r.t as f64 - at).max(0.0)));
        }
    }
    (baseline, (!dipped).then_some(0.0))
}

/// Reads every acknowledged write back from `addr`; returns the number missing and some of their keys.
///
/// # Errors
/// The server cannot be reached or answers with an error.
pub async fn verify_writes(
    addr: &str,
    auth: &Auth,
    run: &str,
    results: &[ClientResult],
    timeout: Duration,
) -> Result<(u64, Vec<String>), ConnError> {
    let mut conn = Conn::connect(addr, auth, timeout).await?;
    let mut lost = 0;
    let mut sample = Vec::new();
    let all: Vec<(usize, u64)> = results
        .iter()
        .flat_map(|r| r.acked.iter().map(move |&seq| (r.id, seq)))
        .collect();
    let mut batch = BytesMut::new();
    for chunk in all.chunks(VERIFY_BATCH) {
        batch.clear();
        for &(client, seq) in chunk {
            push_command(
                &mut batch,
                &[b"GET", unique_key(run, client, seq).as_bytes()],
            );
        }
        conn.send(&batch).await?;
        for &(client, seq) in chunk {
            let found = match parse_value(conn.reply().await?)? {
                Value::Bulk(v) => parse_tracked_value(&v),
                Value::Error(e) => {
                    return Err(ConnError::Reply(String::from_utf8_lossy(&e).into_owned()))
                }
                _ => None,
            };
            if found != Some(seq) {
                lost += 1;
                if sample.len() < LOST_SAMPLE {
                    sample.push(unique_key(run, client, seq));
                }
            }
        }
    }
    Ok((lost, sample))
}

/// How to trigger the failover.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// `SENTINEL FAILOVER` on this sentinel.
    Planned {
        /// The sentinel.
        sentinel: String,
        /// The master's name.
        master_name: String,
    },
    /// SIGKILL of the local process serving this address.
    Kill {
        /// The master's address.
        master: String,
    },
    /// A shell command.
    Command(String),
}

/// Triggers the failover; returns a description for the report.
///
/// # Errors
/// The trigger could not be carried out.
pub async fn trigger(t: &Trigger, auth: &Auth, timeout: Duration) -> Result<String, ConnError> {
    match t {
        Trigger::Planned {
            sentinel,
            master_name,
        } => {
            sentinel::planned_failover(sentinel, master_name, timeout).await?;
            Ok(format!("SENTINEL FAILOVER {master_name} on {sentinel}"))
        }
        Trigger::Kill { master } => {
            let host = master.rsplit_once(':').map_or("", |(h, _)| h);
            let local = host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback())
                || host == "localhost";
            if !local {
                return Err(ConnError::Reply(format!(
                    "ERR {master} is not local: use --failover-cmd to kill it"
                )));
            }
            let pid = sentinel::server_pid(master, auth, timeout).await?;
            shell(&format!("kill -9 {pid}")).await?;
            Ok(format!("kill -9 {pid} ({master})"))
        }
        Trigger::Command(cmd) => {
            shell(cmd).await?;
            Ok(cmd.clone())
        }
    }
}

async fn shell(cmd: &str) -> Result<(), ConnError> {
    let status = tokio::process::Command::new("sh")
        .args(["-c", cmd])
        .status()
        .await?;
    if status.success() {
        Ok(())
    } else {
        Err(ConnError::Reply(format!("ERR `{cmd}` failed: {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(ops: &[u64]) -> Vec<TimelineRow> {
        ops.iter()
            .enumerate()
            .map(|(t, &o)| TimelineRow {
                t: t as u64,
                ops: o,
                errors: 0,
                connects: 0,
                p50_us: 100,
                p99_us: 200,
                max_us: 1000 * (t as u64 + 1),
                histogram: String::new(),
            })
            .collect()
    }

    #[test]
    fn error_window_spans_first_failure_to_last_recovery() {
        let span = |a, b| FailSpan {
            first_error_ms: a,
            recovered_ms: b,
        };
        assert_eq!(error_window(&[]), (None, None));
        assert_eq!(
            error_window(&[span(5000, Some(6300)), span(5100, Some(7000))]),
            (Some(5000), Some(7000))
        );
        assert_eq!(
            error_window(&[span(5000, Some(6300)), span(5100, None)]),
            (Some(5000), None)
        );
    }

    #[test]
    fn recovery_waits_for_the_dip_to_end() {
        let tl = rows(&[100, 100, 100, 20, 0, 50, 95, 100]);
        let (base, rec) = recovery(&tl, 3.0);
        assert!((base - 100.0).abs() < 1e-9);
        assert_eq!(rec, Some(3.0));
        assert_eq!(recovery(&rows(&[100, 100, 100, 99, 100]), 3.0).1, Some(0.0));
        assert_eq!(recovery(&rows(&[100, 100, 0, 0]), 2.0).1, None);
        assert_eq!(recovery(&rows(&[0, 0]), 0.0), (0.0, None));
    }

    #[test]
    fn analyse_takes_the_worst_latency_of_the_failover() {
        let mut f = FailoverReport {
            at_s: Some(3.0),
            ..FailoverReport::default()
        };
        f.analyse(&[], &rows(&[100, 100, 100, 20, 0, 50, 95, 100]));
        assert_eq!(f.recovery_s, Some(3.0));
        assert_eq!(f.max_latency_us, 7000);
        assert!(f.table().contains("no errors"));
    }
}
