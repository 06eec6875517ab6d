//! `LatencySketch`: a mergeable latency distribution (an HdrHistogram), and
//! `LatencySummary`, what a window of them says: count, throughput, p50/p99/p999.
//!
//! Values are recorded in microseconds from 1 µs to 60 s with two significant
//! digits: quantiles are within 1 % of the true value, and one sketch takes about
//! 20 KiB whatever it holds, so a shard's ring of 30 ten-second sketches is about
//! 600 KiB. Slower decisions are recorded as 60 s (the sketch saturates).

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

use super::ring::Bucket;

/// The largest latency a sketch tells apart, in microseconds.
pub const MAX_LATENCY_US: u64 = 60_000_000;
/// Significant decimal digits kept per value.
pub const SIGNIFICANT_DIGITS: u8 = 2;

/// A latency distribution that merges with others of its kind.
#[derive(Debug, Clone)]
pub struct LatencySketch {
    histogram: Histogram<u64>,
}

impl Default for LatencySketch {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencySketch {
    /// An empty sketch.
    pub fn new() -> Self {
        // The bounds are constants that HdrHistogram accepts (low ≥ 1, high ≥ 2·low,
        // 0..=5 digits), so creation cannot fail.
        #[allow(clippy::expect_used)]
        let histogram = Histogram::new_with_bounds(1, MAX_LATENCY_US, SIGNIFICANT_DIGITS)
            .expect("constant histogram bounds are valid");
        LatencySketch { histogram }
    }

    /// Records one latency (sub-microsecond values count as 1 µs, values above
    /// 60 s as 60 s).
    #[inline]
    pub fn record(&mut self, latency: Duration) {
        let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
        self.histogram.saturating_record(us.max(1));
    }

    /// Adds every value of `other` into this sketch.
    pub fn merge(&mut self, other: &LatencySketch) {
        // Both sketches have the same constant bounds, so no value of `other` is out
        // of range and addition cannot fail; saturating counts are the only edge.
        let _ = self.histogram.add(&other.histogram);
    }

    /// The number of recorded values.
    pub fn count(&self) -> u64 {
        self.histogram.len()
    }

    /// The value at quantile `q` (0..=1); zero when empty.
    pub fn quantile(&self, q: f64) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.histogram.value_at_quantile(q))
    }

    /// The largest recorded value (within the sketch's precision); zero when empty.
    pub fn max(&self) -> Duration {
        if self.histogram.is_empty() {
            return Duration::ZERO;
        }
        Duration::from_micros(self.histogram.max())
    }

    /// The number of values at or below `limit`.
    pub fn count_at_most(&self, limit: Duration) -> u64 {
        let us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        self.histogram.count_between(0, us.min(MAX_LATENCY_US))
    }

    /// What this sketch says about a window that covered `covered`.
    pub fn summary(&self, covered: Duration) -> LatencySummary {
        let count = self.count();
        let secs = covered.as_secs_f64();
        LatencySummary {
            count,
            throughput_per_s: if secs > 0.0 { count as f64 / secs } else { 0.0 },
            p50: self.quantile(0.5),
            p99: self.quantile(0.99),
            p999: self.quantile(0.999),
            max: self.max(),
            covered,
        }
    }
}

impl Bucket for LatencySketch {
    fn clear(&mut self) {
        self.histogram.reset();
    }
}

/// Latency and throughput over one window. Quantiles are zero when `count` is 0.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    /// Decisions recorded in the window.
    pub count: u64,
    /// `count` divided by `covered`.
    pub throughput_per_s: f64,
    pub p50: Duration,
    pub p99: Duration,
    pub p999: Duration,
    pub max: Duration,
    /// The time the window really covers (shorter than asked for just after start).
    pub covered: Duration,
}

impl LatencySummary {
    /// Whether the window holds no decision.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn quantiles_of_a_uniform_sequence() {
        let mut s = LatencySketch::new();
        for ms in 1..=1000u64 {
            s.record(Duration::from_millis(ms));
        }
        let within = |got: Duration, want_ms: f64| {
            let got_ms = got.as_secs_f64() * 1000.0;
            assert!(
                (got_ms - want_ms).abs() <= want_ms * 0.01 + 0.001,
                "{got_ms} vs {want_ms}"
            );
        };
        within(s.quantile(0.5), 500.0);
        within(s.quantile(0.99), 990.0);
        within(s.quantile(0.999), 999.0);
        within(s.max(), 1000.0);
        let summary = s.summary(Duration::from_secs(10));
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.throughput_per_s, 100.0);
    }

    #[test]
    fn extremes_saturate_and_empty_reads_zero() {
        let mut s = LatencySketch::new();
        assert_eq!(s.quantile(0.99), Duration::ZERO);
        assert!(s.summary(Duration::ZERO).is_empty());
        s.record(Duration::from_nanos(10));
        s.record(Duration::from_secs(3600));
        assert_eq!(s.count(), 2);
        assert!(s.max() >= Duration::from_secs(59) && s.max() <= Duration::from_secs(61));
        assert_eq!(s.quantile(0.0), Duration::from_micros(1));
        s.clear();
        assert_eq!(s.count(), 0);
    }

    proptest! {
        /// Merging sketches equals recording everything into one.
        #[test]
        fn merge_is_recording_into_one(
            a in proptest::collection::vec(1u64..5_000_000, 0..300),
            b in proptest::collection::vec(1u64..5_000_000, 0..300),
        ) {
            let (mut sa, mut sb, mut all) = (LatencySketch::new(), LatencySketch::new(), LatencySketch::new());
            for &us in &a { sa.record(Duration::from_micros(us)); all.record(Duration::from_micros(us)); }
            for &us in &b { sb.record(Duration::from_micros(us)); all.record(Duration::from_micros(us)); }
            sa.merge(&sb);
            prop_assert_eq!(sa.count(), all.count());
            for q in [0.5, 0.9, 0.99, 0.999] {
                prop_assert_eq!(sa.quantile(q), all.quantile(q));
            }
        }

        /// Every quantile is within 1 % of the exact order statistic.
        #[test]
        fn quantiles_are_within_one_percent(
            mut values in proptest::collection::vec(1u64..10_000_000, 1..500),
            q in 0.0f64..1.0,
        ) {
            let mut s = LatencySketch::new();
            for &us in &values { s.record(Duration::from_micros(us)); }
            values.sort_unstable();
            let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
            let exact = values[rank - 1] as f64;
            let got = s.quantile(q).as_micros() as f64;
            prop_assert!((got - exact).abs() <= exact * 0.01 + 1.0, "q {} got {} exact {}", q, got, exact);
        }

        /// `count_at_most` agrees with counting exactly, up to values within 1 % of the limit.
        #[test]
        fn count_at_most_is_exact_away_from_the_limit(
            values in proptest::collection::vec(1u64..1_000_000, 0..300),
            limit in 1u64..1_000_000,
        ) {
            let mut s = LatencySketch::new();
            for &us in &values { s.record(Duration::from_micros(us)); }
            let low = values.iter().filter(|&&v| (v as f64) <= limit as f64 * 0.99).count() as u64;
            let high = values.iter().filter(|&&v| (v as f64) <= limit as f64 * 1.01 + 1.0).count() as u64;
            let got = s.count_at_most(Duration::from_micros(limit));
            prop_assert!(low <= got && got <= high, "{} <= {} <= {}", low, got, high);
        }
    }
}
