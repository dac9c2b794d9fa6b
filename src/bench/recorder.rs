//! Measurements: each connection records into its own [`Recorder`] and flushes whole seconds into the
//! shared [`Collector`], so the hot path takes no lock (rpc-perf's per-worker histograms, merged on read).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::hist::{new_hist, new_second_hist, record, Hist};

/// One second of the timeline (requests counted by the second their reply arrived in).
#[derive(Debug, Clone)]
pub struct Second {
    /// Successful requests.
    pub ops: u64,
    /// Failed requests (error replies, timeouts, broken connections).
    pub errors: u64,
    /// Connections opened (first connects and reconnects).
    pub connects: u64,
    /// Latency of the successful requests, microseconds.
    pub hist: Hist,
}

impl Default for Second {
    fn default() -> Self {
        Second {
            ops: 0,
            errors: 0,
            connects: 0,
            hist: new_second_hist(),
        }
    }
}

/// Keeps the first `keep` seconds, the replies that landed past the measured end (to requests sent
/// just before it) added to the last one kept rather than shown as a near-empty second (a false
/// dip).
pub fn fold_tail(seconds: &mut Vec<Second>, keep: usize) {
    if seconds.len() > keep {
        let tail = seconds.split_off(keep);
        if let Some(last) = seconds.last_mut() {
            for s in &tail {
                last.add(s);
            }
        }
    }
}

impl Second {
    /// Adds `other`'s counts and latencies.
    pub fn add(&mut self, other: &Second) {
        self.ops += other.ops;
        self.errors += other.errors;
        self.connects += other.connects;
        // Same bounds on both sides: adding cannot fail.
        let _ = self.hist.add(&other.hist);
    }
}

/// A stretch of failures seen by one connection, in ms since measurement began.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FailSpan {
    /// First failed request.
    pub first_error_ms: u64,
    /// First success after it (`None`: none before the run ended).
    pub recovered_ms: Option<u64>,
}

#[derive(Debug)]
struct Inner {
    seconds: Vec<Second>,
    total: Hist,
    errors: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
    spans: Vec<FailSpan>,
}

/// Everything the connections measured, merged.
#[derive(Debug)]
pub struct Collector {
    start: Instant,
    inner: Mutex<Inner>,
}

/// A copy of what was collected, taken when the run is over.
#[derive(Debug, Clone)]
pub struct Collected {
    /// The timeline, one entry per second since measurement began.
    pub seconds: Vec<Second>,
    /// Latency of every successful request.
    pub total: Hist,
    /// Failed requests by kind.
    pub errors: BTreeMap<String, u64>,
    /// The first message seen of each error kind.
    pub samples: BTreeMap<String, String>,
    /// Failure stretches of every connection.
    pub spans: Vec<FailSpan>,
}

impl Collector {
    /// A collector whose timeline starts at `start` (the end of the warm-up).
    pub fn new(start: Instant) -> Arc<Self> {
        Arc::new(Collector {
            start,
            inner: Mutex::new(Inner {
                seconds: Vec::new(),
                total: new_hist(),
                errors: BTreeMap::new(),
                samples: BTreeMap::new(),
                spans: Vec::new(),
            }),
        })
    }

    /// When measurement begins.
    pub fn start(&self) -> Instant {
        self.start
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A poisoned lock only means a recorder panicked mid-merge; the counts are still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Second `i` of the timeline as flushed so far (for the live line).
    pub fn second(&self, i: usize) -> Option<Second> {
        self.lock().seconds.get(i).cloned()
    }

    /// A copy of everything.
    pub fn collected(&self) -> Collected {
        let g = self.lock();
        Collected {
            seconds: g.seconds.clone(),
            total: g.total.clone(),
            errors: g.errors.clone(),
            samples: g.samples.clone(),
            spans: g.spans.clone(),
        }
    }
}

/// One connection's measurements; call [`Recorder::flush`] before dropping it.
#[derive(Debug)]
pub struct Recorder {
    collector: Arc<Collector>,
    start: Instant,
    sec: usize,
    cur: Second,
    total: Hist,
    errors: BTreeMap<String, u64>,
    samples: BTreeMap<String, String>,
    spans: Vec<FailSpan>,
    open_span: Option<u64>,
}

impl Recorder {
    /// A recorder flushing into `collector`.
    pub fn new(collector: Arc<Collector>) -> Self {
        Recorder {
            start: collector.start,
            collector,
            sec: 0,
            cur: Second::default(),
            total: new_hist(),
            errors: BTreeMap::new(),
            samples: BTreeMap::new(),
            spans: Vec::new(),
            open_span: None,
        }
    }

    /// Time since measurement began, `None` during the warm-up.
    fn since_start(&self, now: Instant) -> Option<Duration> {
        now.checked_duration_since(self.start)
    }

    fn roll(&mut self, elapsed: Duration) {
        let sec = elapsed.as_secs() as usize;
        if sec != self.sec {
            self.flush_second();
            self.sec = sec;
        }
    }

    /// A successful request that took `latency`, answered at `now`.
    pub fn ok(&mut self, now: Instant, latency: Duration) {
        let Some(elapsed) = self.since_start(now) else {
            return;
        };
        self.roll(elapsed);
        let us = latency.as_micros().min(u128::from(u64::MAX)) as u64;
        self.cur.ops += 1;
        record(&mut self.cur.hist, us);
        record(&mut self.total, us);
        if let Some(first) = self.open_span.take() {
            self.spans.push(FailSpan {
                first_error_ms: first,
                recovered_ms: Some(elapsed.as_millis() as u64),
            });
        }
    }

    /// `n` failed requests of kind `kind` at `now`.
    pub fn error(&mut self, now: Instant, kind: &str, n: u64) {
        let Some(elapsed) = self.since_start(now) else {
            return;
        };
        self.roll(elapsed);
        self.cur.errors += n;
        match self.errors.get_mut(kind) {
            Some(c) => *c += n,
            None => {
                self.errors.insert(kind.to_string(), n);
            }
        }
        self.open_span.get_or_insert(elapsed.as_millis() as u64);
    }

    /// Keeps `message` as the example of error kind `kind` unless there is one already.
    pub fn sample(&mut self, kind: &str, message: impl FnOnce() -> String) {
        if !self.samples.contains_key(kind) {
            self.samples.insert(kind.to_string(), message());
        }
    }

    /// A connection opened at `now` (during the warm-up: counted in the first second).
    pub fn connected(&mut self, now: Instant) {
        self.roll(self.since_start(now).unwrap_or_default());
        self.cur.connects += 1;
    }

    fn flush_second(&mut self) {
        if self.cur.ops == 0 && self.cur.errors == 0 && self.cur.connects == 0 {
            return;
        }
        let mut g = self.collector.lock();
        if g.seconds.len() <= self.sec {
            g.seconds.resize_with(self.sec + 1, Second::default);
        }
        if let Some(s) = g.seconds.get_mut(self.sec) {
            s.add(&self.cur);
        }
        drop(g);
        self.cur.ops = 0;
        self.cur.errors = 0;
        self.cur.connects = 0;
        self.cur.hist.reset();
    }

    /// Hands everything recorded to the collector; a still-open failure stretch is closed as unrecovered.
    pub fn flush(&mut self) {
        self.flush_second();
        if let Some(first) = self.open_span.take() {
            self.spans.push(FailSpan {
                first_error_ms: first,
                recovered_ms: None,
            });
        }
        let mut g = self.collector.lock();
        let _ = g.total.add(&self.total);
        for (k, n) in std::mem::take(&mut self.errors) {
            *g.errors.entry(k).or_default() += n;
        }
        g.spans.append(&mut self.spans);
        for (k, m) in std::mem::take(&mut self.samples) {
            g.samples.entry(k).or_insert(m);
        }
        drop(g);
        self.total.reset();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorders_fill_the_timeline_by_second_and_skip_the_warmup() {
        let t0 = Instant::now();
        let start = t0 + Duration::from_secs(1);
        let c = Collector::new(start);
        let mut a = Recorder::new(c.clone());
        let mut b = Recorder::new(c.clone());
        a.ok(t0, Duration::from_millis(1)); // warm-up: not counted
        a.connected(start);
        a.ok(
            start + Duration::from_millis(10),
            Duration::from_micros(100),
        );
        b.ok(
            start + Duration::from_millis(20),
            Duration::from_micros(300),
        );
        b.error(start + Duration::from_millis(1500), "READONLY", 2);
        b.sample("READONLY", || "READONLY You can't write".into());
        b.sample("READONLY", || "a later one".into());
        b.ok(
            start + Duration::from_millis(2500),
            Duration::from_micros(200),
        );
        a.ok(
            start + Duration::from_millis(2600),
            Duration::from_micros(900),
        );
        a.flush();
        b.flush();
        let got = c.collected();
        assert_eq!(got.seconds.len(), 3);
        assert_eq!(
            got.seconds.iter().map(|s| s.ops).collect::<Vec<_>>(),
            vec![2, 0, 2]
        );
        assert_eq!(got.seconds[1].errors, 2);
        assert_eq!(got.seconds[0].connects, 1);
        assert_eq!(got.total.len(), 4);
        assert!(got.total.max() >= 900);
        assert_eq!(got.errors.get("READONLY"), Some(&2));
        assert_eq!(got.samples["READONLY"], "READONLY You can't write");
        assert_eq!(
            got.spans,
            vec![FailSpan {
                first_error_ms: 1500,
                recovered_ms: Some(2500)
            }]
        );
    }

    #[test]
    fn an_unrecovered_failure_stays_open() {
        let start = Instant::now();
        let c = Collector::new(start);
        let mut r = Recorder::new(c.clone());
        r.error(start + Duration::from_millis(5), "io", 1);
        r.flush();
        assert_eq!(c.collected().spans[0].recovered_ms, None);
        assert_eq!(c.second(0).map(|s| s.errors), Some(1));
    }
}
