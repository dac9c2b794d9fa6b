//! Lock-free log-linear latency histogram over microseconds, mergeable on read.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Mantissa bits per power of two: 8 sub-buckets, so a bucket spans at most 1/8 of its
/// lower bound and the midpoint we report is within 1/16 (6.25%) of any value in it.
const SUB_BITS: u32 = 3;
const SUB_COUNT: u64 = 1 << SUB_BITS;
/// Highest power of two tracked: 2^27 us is about 134 s; larger values land in the last bucket.
const MAX_EXP: u32 = 27;
/// Values below `SUB_COUNT` us get one exact bucket each; then 8 buckets per power of two.
const BUCKETS: usize = (SUB_COUNT + (MAX_EXP - SUB_BITS + 1) as u64 * SUB_COUNT) as usize;

/// Largest value recorded, in microseconds.
const MAX_RECORDED_US: u64 = 1 << 40;

/// Upper bounds (`le`) of the buckets `/metrics` exports, in microseconds: 50 us to 10 s, three per
/// decade (1, 2.5, 5). Counted exactly on the side of the log-linear buckets, whose bounds are
/// powers of two (a bound such as 1 ms falls inside one of them), so that each `le` bucket holds
/// exactly the observations at most its bound, and merges across proxies (sums of buckets) are right.
pub const EXPORTED_BOUNDS_US: [u64; 17] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000, 10_000_000,
];
/// The exported buckets, the last one past 10 s (`+Inf`).
const EXPORTED: usize = EXPORTED_BOUNDS_US.len() + 1;

/// Bucket index of a value in microseconds (values past the range go to the last bucket).
fn index_of(us: u64) -> usize {
    if us < SUB_COUNT {
        return us as usize;
    }
    let exp = 63 - us.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let shift = exp - SUB_BITS;
    let sub = (us >> shift) & (SUB_COUNT - 1);
    (SUB_COUNT + u64::from(shift) * SUB_COUNT + sub) as usize
}

/// Inclusive `[low, high]` range in microseconds covered by a bucket.
fn bounds_of(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < SUB_COUNT {
        return (i, i);
    }
    let shift = (i - SUB_COUNT) / SUB_COUNT;
    let sub = (i - SUB_COUNT) % SUB_COUNT;
    let low = (SUB_COUNT + sub) << shift;
    let high = ((SUB_COUNT + sub + 1) << shift) - 1;
    (low, high)
}

/// A latency histogram that many tasks record into at once.
///
/// Recording is three relaxed `fetch_add`s (a log-linear bucket, an exported bucket, the sum) and
/// no allocation; reading takes a
/// [`HistogramSnapshot`] copy, which is not atomic across buckets (a command recorded
/// during the copy may be counted in the sum but not yet in a bucket), which is fine
/// for a stats page.
#[derive(Debug)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS],
    /// Observations per exported bucket (not cumulative): `EXPORTED_BOUNDS_US`, then `+Inf`.
    exported: [AtomicU64; EXPORTED],
    sum_us: AtomicU64,
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

impl Histogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            exported: std::array::from_fn(|_| AtomicU64::new(0)),
            sum_us: AtomicU64::new(0),
        }
    }

    /// Records one observation, rounded down to whole microseconds.
    pub fn record(&self, latency: Duration) {
        // Capped at about 12 days so the running sum cannot wrap in practice.
        let us = u64::try_from(latency.as_micros())
            .map_or(MAX_RECORDED_US, |us| us.min(MAX_RECORDED_US));
        if let Some(bucket) = self.buckets.get(index_of(us)) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        // The first bound at least `us` (17 bounds: a binary search is no faster).
        let le = EXPORTED_BOUNDS_US.partition_point(|&b| b < us);
        if let Some(bucket) = self.exported.get(le) {
            bucket.fetch_add(1, Ordering::Relaxed);
        }
        self.sum_us.fetch_add(us, Ordering::Relaxed);
    }

    /// Copies the current counts.
    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            exported: self
                .exported
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_us: self.sum_us.load(Ordering::Relaxed),
        }
    }
}

/// A point-in-time copy of a [`Histogram`], for quantiles and merging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HistogramSnapshot {
    counts: Vec<u64>,
    exported: Vec<u64>,
    sum_us: u64,
}

impl Default for HistogramSnapshot {
    fn default() -> Self {
        Self {
            counts: vec![0; BUCKETS],
            exported: vec![0; EXPORTED],
            sum_us: 0,
        }
    }
}

impl HistogramSnapshot {
    /// Number of observations.
    pub fn count(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// Sum of all observations, in microseconds (saturating).
    pub fn sum(&self) -> Duration {
        Duration::from_micros(self.sum_us)
    }

    /// Adds another snapshot's counts into this one (e.g. per-worker histograms).
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine = mine.saturating_add(*theirs);
        }
        for (mine, theirs) in self.exported.iter_mut().zip(&other.exported) {
            *mine = mine.saturating_add(*theirs);
        }
        self.sum_us = self.sum_us.saturating_add(other.sum_us);
    }

    /// The value at quantile `q` (clamped to `0.0..=1.0`), as the midpoint of the bucket
    /// holding it: within ~6.25% of the true value. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 {
            return None;
        }
        let q = if q.is_nan() { 0.5 } else { q.clamp(0.0, 1.0) };
        // Rank of the wanted observation, 1-based: the smallest r with r >= q * total.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0u64;
        for (index, &n) in self.counts.iter().enumerate() {
            seen += n;
            if seen >= rank {
                let (low, high) = bounds_of(index);
                return Some(Duration::from_micros(low + (high - low) / 2));
            }
        }
        None
    }

    /// The exported buckets, cumulative as Prometheus's: for each of [`EXPORTED_BOUNDS_US`] the
    /// observations at most that bound, then all of them (`le="+Inf"`, the `_count`).
    pub fn cumulative(&self) -> Vec<u64> {
        let mut total = 0u64;
        self.exported
            .iter()
            .map(|&n| {
                total = total.saturating_add(n);
                total
            })
            .collect()
    }

    /// The upper bound of the highest non-empty bucket. `None` when empty.
    pub fn max(&self) -> Option<Duration> {
        let index = self.counts.iter().rposition(|&n| n > 0)?;
        Some(Duration::from_micros(bounds_of(index).1))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(actual: Duration, expected_us: u64, tolerance: f64) -> bool {
        let a = actual.as_micros() as f64;
        let e = expected_us as f64;
        (a - e).abs() <= e * tolerance + 1.0
    }

    #[test]
    fn buckets_cover_the_range_without_gaps() {
        let mut next = 0;
        for index in 0..BUCKETS {
            let (low, high) = bounds_of(index);
            assert_eq!(low, next, "bucket {index}");
            assert!(high >= low);
            assert_eq!(index_of(low), index);
            assert_eq!(index_of(high), index);
            next = high + 1;
        }
        assert!(next > 100_000_000, "covers at least 100 s");
        assert_eq!(index_of(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn bucket_width_is_at_most_an_eighth() {
        for index in SUB_COUNT as usize..BUCKETS {
            let (low, high) = bounds_of(index);
            assert!(
                (high - low + 1) * 8 <= low + 7,
                "bucket {index}: {low}..{high}"
            );
        }
    }

    #[test]
    fn quantiles_of_uniform_data_are_within_tolerance() {
        let h = Histogram::new();
        for us in 1..=10_000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.snapshot();
        assert_eq!(s.count(), 10_000);
        assert_eq!(s.sum(), Duration::from_micros(10_000 * 10_001 / 2));
        for (q, expected) in [(0.5, 5_000), (0.9, 9_000), (0.99, 9_900), (1.0, 10_000)] {
            let got = s.quantile(q).expect("not empty");
            assert!(
                within(got, expected, 0.0625),
                "q{q}: {got:?} vs {expected}us"
            );
        }
        let min = s.quantile(0.0).expect("not empty");
        assert_eq!(min, Duration::from_micros(1));
    }

    #[test]
    fn quantiles_of_a_bimodal_distribution() {
        let h = Histogram::new();
        for _ in 0..980 {
            h.record(Duration::from_micros(200));
        }
        for _ in 0..20 {
            h.record(Duration::from_millis(50));
        }
        let s = h.snapshot();
        assert!(within(s.quantile(0.5).expect("p50"), 200, 0.0625));
        assert!(within(s.quantile(0.97).expect("p97"), 200, 0.0625));
        assert!(within(s.quantile(0.99).expect("p99"), 50_000, 0.0625));
        assert!(within(s.max().expect("max"), 50_000, 0.125));
    }

    #[test]
    fn small_values_are_exact_and_huge_values_clamp() {
        let h = Histogram::new();
        h.record(Duration::from_micros(3));
        assert_eq!(h.snapshot().quantile(0.5), Some(Duration::from_micros(3)));
        let h = Histogram::new();
        h.record(Duration::from_secs(100_000));
        let top = h.snapshot().quantile(0.5).expect("one value");
        assert!(top >= Duration::from_secs(100));
    }

    #[test]
    fn empty_histogram_has_no_quantiles() {
        let s = Histogram::new().snapshot();
        assert_eq!(s.count(), 0);
        assert_eq!(s.quantile(0.5), None);
        assert_eq!(s.max(), None);
    }

    #[test]
    fn exported_buckets_hold_exactly_the_values_at_most_their_bound() {
        let h = Histogram::new();
        for us in [
            0,
            50,
            51,
            999,
            1_000,
            1_001,
            10_000_000,
            10_000_001,
            u64::MAX,
        ] {
            h.record(Duration::from_micros(us));
        }
        let c = h.snapshot().cumulative();
        assert_eq!(c.len(), EXPORTED_BOUNDS_US.len() + 1);
        let at = |bound_us: u64| {
            let i = EXPORTED_BOUNDS_US.iter().position(|&b| b == bound_us);
            c[i.expect("a bound")]
        };
        assert_eq!(at(50), 2, "0 and 50 us are at most 50 us");
        assert_eq!(at(100), 3);
        assert_eq!(at(1_000), 5, "1 ms itself is in le=0.001");
        assert_eq!(at(2_500), 6);
        assert_eq!(at(10_000_000), 7);
        assert_eq!(c.last().copied(), Some(9), "+Inf holds everything");
        assert!(c.windows(2).all(|w| w[0] <= w[1]), "cumulative");
    }

    #[test]
    fn merge_adds_counts_and_sums() {
        let a = Histogram::new();
        let b = Histogram::new();
        for _ in 0..50 {
            a.record(Duration::from_micros(100));
            b.record(Duration::from_micros(1_000));
        }
        let mut merged = a.snapshot();
        merged.merge(&b.snapshot());
        assert_eq!(merged.count(), 100);
        assert_eq!(merged.cumulative().last().copied(), Some(100));
        assert_eq!(merged.sum(), Duration::from_micros(55_000));
        assert!(within(merged.quantile(0.25).expect("p25"), 100, 0.0625));
        assert!(within(merged.quantile(0.75).expect("p75"), 1_000, 0.0625));
    }
}
