//! `haproxy-rs bench merge`: several runs' JSON reports (several load generators) as one.

use std::collections::BTreeMap;

use anyhow::{bail, Context as _};

use super::failover::{recovery, FailoverReport};
use super::hist::{decode_into, new_hist, new_second_hist, Percentiles};
use super::report::{RunReport, TimelineRow};

/// How the runs relate in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// They ran at the same time (several machines): timelines are aligned on their start times and
    /// added, throughput is the sum.
    Concurrent,
    /// They ran one after the other (rounds of `--compare`): timelines are added second by second from
    /// each run's start, and throughput is the mean over the summed durations.
    Sequential,
}

/// Merges concurrent runs; see [`merge_with`].
///
/// # Errors
/// No report, or a histogram that cannot be decoded.
pub fn merge(reports: &[RunReport]) -> anyhow::Result<RunReport> {
    merge_with(reports, Timing::Concurrent)
}

/// Merges `reports`: histograms added exactly, error counts and timelines summed, failover counts summed.
///
/// # Errors
/// No report, or a histogram that cannot be decoded.
pub fn merge_with(reports: &[RunReport], timing: Timing) -> anyhow::Result<RunReport> {
    let Some(first) = reports.first() else {
        bail!("nothing to merge");
    };
    let t0 = reports
        .iter()
        .map(|r| r.setup.started_unix)
        .min()
        .unwrap_or(0);
    let offset = |r: &RunReport| match timing {
        Timing::Concurrent => r.setup.started_unix.saturating_sub(t0),
        Timing::Sequential => 0,
    };
    let Sums {
        total,
        errors,
        timeline,
    } = Sums::of(reports, &offset)?;
    let duration_s = match timing {
        Timing::Concurrent => reports
            .iter()
            .map(|r| offset(r) as f64 + r.duration_s)
            .fold(0.0, f64::max),
        Timing::Sequential => reports.iter().map(|r| r.duration_s).sum(),
    };
    let mut setup = first.setup.clone();
    setup.started_unix = t0;
    if timing == Timing::Concurrent {
        setup.name = format!("{} runs merged", reports.len());
        setup.clients = reports.iter().map(|r| r.setup.clients).sum();
        setup.rps = reports.iter().map(|r| r.setup.rps).sum();
    }
    let mut merged = RunReport::from_parts(setup, duration_s, &total, errors, timeline);
    merged.runs = reports.iter().map(|r| r.runs).sum();
    for r in reports {
        for (k, m) in &r.error_samples {
            merged
                .error_samples
                .entry(k.clone())
                .or_insert_with(|| m.clone());
        }
    }
    merged.failover = merge_failover(reports, &merged.timeline, &offset);
    merged.events = merge_events(reports, &offset);
    Ok(merged)
}

/// The runs' histograms, errors and timelines added up, each run's seconds shifted by its offset.
struct Sums {
    total: super::hist::Hist,
    errors: BTreeMap<String, u64>,
    timeline: Vec<TimelineRow>,
}

impl Sums {
    fn of(reports: &[RunReport], offset: &dyn Fn(&RunReport) -> u64) -> anyhow::Result<Sums> {
        let mut total = new_hist();
        let mut errors: BTreeMap<String, u64> = BTreeMap::new();
        let mut seconds: BTreeMap<u64, (TimelineRow, super::hist::Hist)> = BTreeMap::new();
        for r in reports {
            decode_into(&r.histogram, &mut total)
                .with_context(|| format!("histogram of run {}", r.setup.name))?;
            for (k, n) in &r.errors_by_kind {
                *errors.entry(k.clone()).or_default() += n;
            }
            let off = offset(r);
            for row in &r.timeline {
                let t = row.t + off;
                let (acc, hist) = seconds.entry(t).or_insert_with(|| {
                    let mut empty = row.clone();
                    empty.t = t;
                    empty.ops = 0;
                    empty.errors = 0;
                    empty.connects = 0;
                    (empty, new_second_hist())
                });
                acc.ops += row.ops;
                acc.errors += row.errors;
                acc.connects += row.connects;
                decode_into(&row.histogram, hist)
                    .with_context(|| format!("second {} of run {}", row.t, r.setup.name))?;
            }
        }
        let timeline: Vec<TimelineRow> = seconds
            .into_values()
            .map(|(mut row, hist)| {
                let p = Percentiles::of(&hist);
                (row.p50_us, row.p99_us, row.max_us) = (p.p50, p.p99, p.max);
                row.histogram = super::hist::encode(&hist);
                row
            })
            .collect();
        Ok(Sums {
            total,
            errors,
            timeline,
        })
    }
}

/// Every run's sentinel events on the merged clock, in time order; the same event seen by
/// several load generators (within a second) once.
fn merge_events(
    reports: &[RunReport],
    offset: &dyn Fn(&RunReport) -> u64,
) -> Vec<super::sentinel::SentinelEvent> {
    let mut events: Vec<_> = reports
        .iter()
        .flat_map(|r| {
            let off = offset(r) as f64;
            r.events.iter().cloned().map(move |mut e| {
                e.t += off;
                e
            })
        })
        .collect();
    events.sort_by(|a, b| a.t.total_cmp(&b.t));
    events.dedup_by(|b, a| {
        a.sentinel == b.sentinel
            && a.channel == b.channel
            && a.payload == b.payload
            && (b.t - a.t).abs() < 1.0
    });
    events
}

fn merge_failover(
    reports: &[RunReport],
    timeline: &[TimelineRow],
    offset: &dyn Fn(&RunReport) -> u64,
) -> Option<FailoverReport> {
    let with: Vec<(&RunReport, &FailoverReport)> = reports
        .iter()
        .filter_map(|r| r.failover.as_ref().map(|f| (r, f)))
        .collect();
    let (_, first) = with.first()?;
    let shifted = |r: &RunReport, v: Option<f64>| v.map(|v| v + offset(r) as f64);
    let mut f = FailoverReport {
        trigger: first.trigger.clone(),
        old_master: first.old_master.clone(),
        verified_on: first.verified_on.clone(),
        ..FailoverReport::default()
    };
    for (r, x) in &with {
        f.acked_writes += x.acked_writes;
        f.lost_writes += x.lost_writes;
        f.reads += x.reads;
        f.stale_reads += x.stale_reads;
        f.lost_sample.extend(
            x.lost_sample
                .iter()
                .take(10usize.saturating_sub(f.lost_sample.len()))
                .cloned(),
        );
        f.at_s = min_opt(f.at_s, shifted(r, x.at_s));
        f.error_window_start_s =
            min_opt(f.error_window_start_s, shifted(r, x.error_window_start_s));
    }
    let ends: Vec<Option<f64>> = with
        .iter()
        .filter(|(_, x)| x.error_window_start_s.is_some())
        .map(|(r, x)| shifted(r, x.error_window_end_s))
        .collect();
    f.error_window_end_s = if ends.iter().any(Option::is_none) {
        None
    } else {
        ends.into_iter().flatten().reduce(f64::max)
    };
    if let Some(at) = f.at_s {
        (f.baseline_throughput, f.recovery_s) = recovery(timeline, at);
        let last = f.recovery_s.map_or(u64::MAX, |r| (at + r).ceil() as u64);
        f.max_latency_us = timeline
            .iter()
            .filter(|r| r.t >= at.floor() as u64 && r.t <= last)
            .map(|r| r.max_us)
            .max()
            .unwrap_or(0);
    }
    Some(f)
}

fn min_opt(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::bench::hist::record;
    use crate::bench::report::tests::sample;

    #[test]
    fn concurrent_runs_add_up_exactly() {
        let a = sample(&[100, 100], &[1000, 1000]);
        let mut b = sample(&[50, 50, 50], &[3000, 3000, 3000]);
        b.setup.started_unix = 1; // started one second later
        let m = merge(&[a.clone(), b]).unwrap();
        assert_eq!(m.runs, 2);
        assert_eq!(m.ops, 350);
        assert_eq!(m.errors, 4);
        assert_eq!(m.duration_s, 4.0);
        assert_eq!(
            m.timeline.iter().map(|r| r.ops).collect::<Vec<_>>(),
            vec![100, 150, 50, 50]
        );
        let mut second = new_second_hist();
        decode_into(&m.timeline[1].histogram, &mut second).unwrap();
        assert_eq!(second.len(), 150);
        assert_eq!(m.timeline[1].max_us, second.max());
        let mut both = new_hist();
        for (n, v) in [(200, 1000), (150, 3000)] {
            for _ in 0..n {
                record(&mut both, v);
            }
        }
        assert_eq!(m.latency_us, Percentiles::of(&both));
        assert_eq!(m.setup.clients, 2);
    }

    #[test]
    fn sequential_rounds_average_the_throughput() {
        let a = sample(&[100, 100], &[1000, 1000]);
        let b = sample(&[300, 300], &[1000, 1000]);
        let m = merge_with(&[a, b], Timing::Sequential).unwrap();
        assert!((m.throughput - 200.0).abs() < 1e-9);
        assert_eq!(m.timeline.len(), 2);
        assert!(merge(&[]).is_err());
    }

    #[test]
    fn failover_counts_are_summed() {
        let mut a = sample(&[100, 100, 0, 100], &[1000; 4]);
        let mut b = a.clone();
        a.failover = Some(FailoverReport {
            at_s: Some(1.5),
            acked_writes: 10,
            lost_writes: 1,
            error_window_start_s: Some(2.0),
            error_window_end_s: Some(2.5),
            ..FailoverReport::default()
        });
        b.failover = Some(FailoverReport {
            at_s: Some(1.5),
            acked_writes: 5,
            stale_reads: 2,
            error_window_start_s: Some(1.8),
            error_window_end_s: Some(3.1),
            ..FailoverReport::default()
        });
        let f = merge(&[a, b]).unwrap().failover.unwrap();
        assert_eq!((f.acked_writes, f.lost_writes, f.stale_reads), (15, 1, 2));
        assert_eq!(f.error_window_start_s, Some(1.8));
        assert_eq!(f.error_window_end_s, Some(3.1));
        assert_eq!(f.recovery_s, Some(1.5));
    }
}
