//! The report of a run: built from what was collected, printed as a table, written as JSON and CSV.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

use anyhow::Context as _;

use super::args::OutputArgs;
use super::failover::FailoverReport;
use super::hist::{encode, fmt_us, Hist, Percentiles};
use super::recorder::{fold_tail, Collected, Second};
use super::sentinel::SentinelEvent;
use super::workload::WorkloadSpec;

/// Version of the JSON layout.
pub const FORMAT_VERSION: u32 = 1;

/// One second of the timeline.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TimelineRow {
    /// Seconds since measurement began (the row covers `[t, t+1)`).
    pub t: u64,
    /// Successful requests.
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Connections opened.
    pub connects: u64,
    /// Median latency, us.
    pub p50_us: u64,
    /// 99th percentile latency, us.
    pub p99_us: u64,
    /// Highest latency, us.
    pub max_us: u64,
    /// The second's latency histogram (HDR V2 deflate, base64), for merging.
    pub histogram: String,
}

impl TimelineRow {
    /// The row of second `t`.
    pub fn of(t: u64, s: &Second) -> Self {
        let p = Percentiles::of(&s.hist);
        TimelineRow {
            t,
            ops: s.ops,
            errors: s.errors,
            connects: s.connects,
            p50_us: p.p50,
            p99_us: p.p99,
            max_us: p.max,
            histogram: encode(&s.hist),
        }
    }
}

/// How the run was set up.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunSetup {
    /// A label (the `--compare` name, or the target).
    pub name: String,
    /// What was loaded.
    pub target: String,
    /// The workload.
    pub workload: WorkloadSpec,
    /// Connections.
    pub clients: usize,
    /// Pipeline depth.
    pub pipeline: usize,
    /// Open loop rate, none for closed loop.
    pub rps: Option<u64>,
    /// Unix time the measurement began, seconds.
    pub started_unix: u64,
}

/// Everything a run measured.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct RunReport {
    /// Layout version.
    pub version: u32,
    /// How many runs were merged into this one (1 for a plain run).
    pub runs: u32,
    /// The setup.
    pub setup: RunSetup,
    /// Seconds measured.
    pub duration_s: f64,
    /// Successful requests.
    pub ops: u64,
    /// Failed requests.
    pub errors: u64,
    /// Successful requests per second.
    pub throughput: f64,
    /// Connections opened (first connects and reconnects).
    pub connects: u64,
    /// Latency summary of the successful requests, us.
    pub latency_us: Percentiles,
    /// The latency histogram (HDR V2 deflate, base64), for merging.
    pub histogram: String,
    /// Failed requests by kind (reply error's first word, or connect/io/timeout/protocol).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first message of each error kind.
    #[serde(default)]
    pub error_samples: BTreeMap<String, String>,
    /// Per-second timeline.
    pub timeline: Vec<TimelineRow>,
    /// Failover findings, when the run tracked writes.
    pub failover: Option<FailoverReport>,
    /// Sentinel events seen during the run.
    pub events: Vec<SentinelEvent>,
}

/// How many timeline seconds a run of `duration_s` has (the last may be partial).
pub fn measured_seconds(duration_s: f64) -> usize {
    (duration_s.ceil() as usize).max(1)
}

impl RunReport {
    /// The report of `collected` over `duration_s` seconds.
    pub fn new(setup: RunSetup, duration_s: f64, collected: &Collected) -> Self {
        let mut seconds = collected.seconds.clone();
        fold_tail(&mut seconds, measured_seconds(duration_s));
        let timeline: Vec<TimelineRow> = seconds
            .iter()
            .enumerate()
            .map(|(t, s)| TimelineRow::of(t as u64, s))
            .collect();
        let mut r = Self::from_parts(
            setup,
            duration_s,
            &collected.total,
            collected.errors.clone(),
            timeline,
        );
        r.error_samples = collected.samples.clone();
        r
    }

    /// The report of a total histogram, error counts and a timeline (also used by merging).
    pub fn from_parts(
        setup: RunSetup,
        duration_s: f64,
        total: &Hist,
        errors_by_kind: BTreeMap<String, u64>,
        timeline: Vec<TimelineRow>,
    ) -> Self {
        let ops = total.len();
        RunReport {
            version: FORMAT_VERSION,
            runs: 1,
            setup,
            duration_s,
            ops,
            errors: errors_by_kind.values().sum(),
            throughput: if duration_s > 0.0 {
                ops as f64 / duration_s
            } else {
                0.0
            },
            connects: timeline.iter().map(|r| r.connects).sum(),
            latency_us: Percentiles::of(total),
            histogram: encode(total),
            errors_by_kind,
            error_samples: BTreeMap::new(),
            timeline,
            failover: None,
            events: Vec::new(),
        }
    }

    /// The final table.
    pub fn table(&self) -> String {
        let l = &self.latency_us;
        let mut s = String::new();
        let w = &self.setup.workload;
        let _ = writeln!(
            s,
            "== {} ({}): {}, {} clients, pipeline {}, {}",
            self.setup.name,
            self.setup.target,
            w.describe(),
            self.setup.clients,
            self.setup.pipeline,
            match self.setup.rps {
                Some(r) => format!("open loop {r} req/s"),
                None => "closed loop".into(),
            }
        );
        let _ = writeln!(
            s,
            "{:>12} {:>12} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "requests", "req/s", "errors", "mean", "p50", "p95", "p99", "p99.9", "max"
        );
        let _ = writeln!(
            s,
            "{:>12} {:>12.0} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            self.ops,
            self.throughput,
            self.errors,
            fmt_us(l.mean as u64),
            fmt_us(l.p50),
            fmt_us(l.p95),
            fmt_us(l.p99),
            fmt_us(l.p999),
            fmt_us(l.max)
        );
        let _ = writeln!(
            s,
            "duration {:.1}s, connections opened {}{}",
            self.duration_s,
            self.connects,
            if self.runs > 1 {
                format!(", {} runs merged", self.runs)
            } else {
                String::new()
            }
        );
        for (kind, n) in &self.errors_by_kind {
            match self.error_samples.get(kind) {
                Some(m) => writeln!(s, "  errors {kind}: {n} (first: {m})"),
                None => writeln!(s, "  errors {kind}: {n}"),
            }
            .ok();
        }
        if let Some(f) = &self.failover {
            s.push_str(&f.table());
        }
        if !self.events.is_empty() {
            let _ = writeln!(s, "sentinel events:");
            for e in &self.events {
                let _ = writeln!(
                    s,
                    "  {:>8.3}s [{}] {} {}",
                    e.t, e.sentinel, e.channel, e.payload
                );
            }
        }
        s
    }

    /// The timeline as CSV.
    pub fn csv(&self) -> String {
        let mut s = String::from("t,ops,errors,connects,p50_us,p99_us,max_us\n");
        for r in &self.timeline {
            let _ = writeln!(
                s,
                "{},{},{},{},{},{},{}",
                r.t, r.ops, r.errors, r.connects, r.p50_us, r.p99_us, r.max_us
            );
        }
        s
    }

    /// Reads a report written with `--json`.
    ///
    /// # Errors
    /// The file cannot be read or is not a report.
    pub fn read(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Writes the files `out` asks for.
    ///
    /// # Errors
    /// A file cannot be written.
    pub fn write(&self, out: &OutputArgs) -> anyhow::Result<()> {
        if let Some(p) = &out.json {
            let json = serde_json::to_string_pretty(self)?;
            std::fs::write(p, json).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(p) = &out.csv {
            std::fs::write(p, self.csv()).with_context(|| format!("writing {}", p.display()))?;
        }
        if let Some(p) = &out.html {
            std::fs::write(p, super::html::render(std::slice::from_ref(self)))
                .with_context(|| format!("writing {}", p.display()))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::bench::hist::{new_hist, record};
    use crate::bench::workload::{KeyDist, WorkloadKind};

    pub(crate) fn setup() -> RunSetup {
        RunSetup {
            name: "t".into(),
            target: "127.0.0.1:1".into(),
            workload: WorkloadSpec {
                kind: WorkloadKind::Set,
                ratio: (1, 1),
                keys_per_command: 1,
                keyspace: 10,
                key_dist: KeyDist::Uniform,
                zipf_exponent: 0.99,
                data_size: 3,
                seed: 1,
                tracked: None,
            },
            clients: 1,
            pipeline: 1,
            rps: None,
            started_unix: 0,
        }
    }

    /// A report whose second `t` has `ops[t]` requests of `lat[t]` us each.
    pub(crate) fn sample(ops: &[u64], lat: &[u64]) -> RunReport {
        let mut total = new_hist();
        let mut seconds = Vec::new();
        for (o, l) in ops.iter().zip(lat) {
            let mut s = Second::default();
            for _ in 0..*o {
                record(&mut s.hist, *l);
                record(&mut total, *l);
            }
            s.ops = *o;
            seconds.push(s);
        }
        let c = Collected {
            seconds,
            total,
            errors: BTreeMap::from([("io".to_string(), 2)]),
            samples: BTreeMap::from([("io".to_string(), "i/o: broken pipe".to_string())]),
            spans: Vec::new(),
        };
        RunReport::new(setup(), ops.len() as f64, &c)
    }

    /// The timeline of `r` back as collected seconds.
    fn collected(r: &RunReport) -> Collected {
        let mut seconds = Vec::new();
        for row in &r.timeline {
            let mut s = Second::default();
            crate::bench::hist::decode_into(&row.histogram, &mut s.hist).unwrap();
            s.ops = row.ops;
            seconds.push(s);
        }
        Collected {
            seconds,
            total: crate::bench::hist::decode(&r.histogram).unwrap(),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            spans: Vec::new(),
        }
    }

    #[test]
    fn report_sums_and_renders() {
        let r = sample(&[100, 300], &[1000, 2000]);
        assert_eq!(r.ops, 400);
        assert_eq!(r.errors, 2);
        assert!((r.throughput - 200.0).abs() < 1e-9);
        // Per-second histograms keep 2 significant digits.
        assert!(
            (2000..2020).contains(&r.timeline[1].p99_us),
            "{:?}",
            r.timeline[1]
        );
        let table = r.table();
        assert!(
            table.contains("errors io: 2 (first: i/o: broken pipe)"),
            "{table}"
        );
        assert!(table.contains("2.00ms"), "{table}");
        let csv = r.csv();
        assert_eq!(csv.lines().count(), 3);
        assert!(
            csv.lines().nth(2).unwrap().starts_with("1,300,0,0,"),
            "{csv}"
        );
        let back: RunReport = serde_json::from_str(&serde_json::to_string(&r).unwrap()).unwrap();
        let mut short = sample(&[100, 300, 7], &[1000, 2000, 3000]);
        short = RunReport::new(short.setup.clone(), 2.0, &collected(&short));
        assert_eq!(
            short.timeline.len(),
            2,
            "replies after the end fold into the last second"
        );
        assert_eq!(short.timeline[1].ops, 307);
        assert_eq!(back.latency_us, r.latency_us);
        assert_eq!(back.timeline, r.timeline);
    }
}
