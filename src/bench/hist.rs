//! Latency histograms (HDR, microseconds): creation, percentiles, and a text form that merges exactly.

use base64::Engine as _;
use hdrhistogram::serialization::{Deserializer, Serializer, V2DeflateSerializer};
use hdrhistogram::Histogram;

/// Highest latency tracked, in microseconds (one hour); larger values are clamped to it.
pub const MAX_US: u64 = 3_600_000_000;

/// A latency histogram in microseconds.
pub type Hist = Histogram<u64>;

/// Why a serialized histogram could not be read back.
#[derive(Debug, thiserror::Error)]
pub enum HistError {
    /// Not base64.
    #[error("histogram is not base64: {0}")]
    Base64(#[from] base64::DecodeError),
    /// Not an HDR V2 (deflate) histogram.
    #[error("histogram cannot be decoded: {0:?}")]
    Decode(hdrhistogram::serialization::DeserializeError),
    /// Recording into the merged histogram failed.
    #[error("histograms cannot be added: {0}")]
    Add(#[from] hdrhistogram::errors::AdditionError),
}

/// An empty histogram: 1 us to [`MAX_US`], 3 significant digits.
pub fn new_hist() -> Hist {
    // Constant, valid bounds: creation cannot fail.
    Histogram::new_with_bounds(1, MAX_US, 3).expect("constant histogram bounds are valid")
}

/// An empty histogram for one second of a timeline: 2 significant digits, an eighth of the memory.
pub fn new_second_hist() -> Hist {
    Histogram::new_with_bounds(1, MAX_US, 2).expect("constant histogram bounds are valid")
}

/// Records `us` microseconds, clamped into the tracked range.
pub fn record(h: &mut Hist, us: u64) {
    h.saturating_record(us.clamp(1, MAX_US));
}

/// The histogram as base64 of its HDR V2 deflate encoding (the format HdrHistogram's tools read).
pub fn encode(h: &Hist) -> String {
    let mut bytes = Vec::new();
    // Writing into a Vec cannot fail for a histogram within its bounds.
    if V2DeflateSerializer::new().serialize(h, &mut bytes).is_err() {
        bytes.clear();
    }
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Reads back what [`encode`] wrote and adds it into `into`; an empty string adds nothing.
///
/// # Errors
/// Not what [`encode`] writes.
pub fn decode_into(s: &str, into: &mut Hist) -> Result<(), HistError> {
    if s.is_empty() {
        return Ok(());
    }
    let bytes = base64::engine::general_purpose::STANDARD.decode(s)?;
    let h: Hist = Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(HistError::Decode)?;
    into.add(&h)?;
    Ok(())
}

/// [`decode_into`] a fresh [`new_hist`].
///
/// # Errors
/// See [`decode_into`].
pub fn decode(s: &str) -> Result<Hist, HistError> {
    let mut h = new_hist();
    decode_into(s, &mut h)?;
    Ok(h)
}

/// The latency summary of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Values recorded.
    pub count: u64,
    /// Mean.
    pub mean: f64,
    /// Median.
    pub p50: u64,
    /// 95th percentile.
    pub p95: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p999: u64,
    /// Highest value.
    pub max: u64,
}

impl Percentiles {
    /// The summary of `h` (all zero when empty).
    pub fn of(h: &Hist) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        Percentiles {
            count: h.len(),
            mean: h.mean(),
            p50: h.value_at_quantile(0.50),
            p95: h.value_at_quantile(0.95),
            p99: h.value_at_quantile(0.99),
            p999: h.value_at_quantile(0.999),
            max: h.max(),
        }
    }
}

/// Microseconds as a short human figure: `850us`, `1.25ms`, `2.50s`.
pub fn fmt_us(us: u64) -> String {
    match us {
        0..=999 => format!("{us}us"),
        1_000..=999_999 => format!("{:.2}ms", us as f64 / 1e3),
        _ => format!("{:.2}s", us as f64 / 1e6),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_hdr_precision() {
        let mut h = new_hist();
        for us in 1..=10_000 {
            record(&mut h, us);
        }
        let p = Percentiles::of(&h);
        assert_eq!(p.count, 10_000);
        assert!((4995..=5005).contains(&p.p50), "{p:?}");
        assert!((9895..=9905).contains(&p.p99), "{p:?}");
        assert!((9985..=10_000).contains(&p.p999), "{p:?}");
        assert!((10_000..=10_010).contains(&p.max), "{p:?}");
        assert_eq!(Percentiles::of(&new_hist()), Percentiles::default());
    }

    #[test]
    fn encode_decode_round_trips_and_merging_equals_recording_together() {
        let (mut a, mut b, mut both) = (new_hist(), new_hist(), new_hist());
        for us in [3, 80, 950, 12_000, 2_000_000] {
            record(&mut a, us);
            record(&mut both, us);
        }
        for us in [5, 5, 700, 40_000_000] {
            record(&mut b, us);
            record(&mut both, us);
        }
        let a2 = decode(&encode(&a)).unwrap();
        assert_eq!(a2, a);
        let mut merged = decode(&encode(&a)).unwrap();
        merged.add(decode(&encode(&b)).unwrap()).unwrap();
        assert_eq!(merged, both);
        assert_eq!(Percentiles::of(&merged), Percentiles::of(&both));
        assert!(decode("").unwrap().is_empty());
        assert!(decode("not base64!").is_err());
    }

    #[test]
    fn values_out_of_range_are_clamped() {
        let mut h = new_hist();
        record(&mut h, 0);
        record(&mut h, u64::MAX);
        assert_eq!(h.len(), 2);
        assert_eq!(h.min(), 1);
        assert!(h.max() >= MAX_US);
    }

    #[test]
    fn durations_print_short() {
        assert_eq!(fmt_us(850), "850us");
        assert_eq!(fmt_us(1250), "1.25ms");
        assert_eq!(fmt_us(2_500_000), "2.50s");
    }
}
