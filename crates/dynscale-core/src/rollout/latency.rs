//! A mergeable latency histogram with fixed log-linear buckets (6.25 % resolution).
//!
//! Values are microseconds. Values below 16 µs have a bucket each; above, every
//! power of two is split into 16 equal buckets, so a bucket's width is at most 1/16
//! of its lower bound. The bucket edges are fixed, which makes two histograms
//! mergeable by adding counts and lets the latency test count "values above a
//! threshold" exactly when the threshold is a bucket edge. Only non-empty buckets
//! are stored, so an idle arm costs nothing in a stored event.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 4;
const SUB: u64 = 1 << SUB_BITS;

/// The index of the bucket holding `micros`.
pub fn bucket_index(micros: u64) -> u16 {
    if micros < SUB {
        return micros as u16;
    }
    let exp = 63 - micros.leading_zeros();
    let sub = (micros >> (exp - SUB_BITS)) & (SUB - 1);
    // exp ≤ 63, so the index is at most 16 + 59·16 + 15 = 975.
    (SUB + u64::from(exp - SUB_BITS) * SUB + sub) as u16
}

/// The smallest value in bucket `index`.
pub fn bucket_lower(index: u16) -> u64 {
    let i = u64::from(index);
    if i < SUB {
        return i;
    }
    let exp = (i - SUB) / SUB + u64::from(SUB_BITS);
    let sub = (i - SUB) % SUB;
    (SUB + sub) << (exp - u64::from(SUB_BITS))
}

/// The number of buckets (the index of `u64::MAX` plus one).
pub const BUCKET_COUNT: usize = 976;

/// A histogram of latencies in microseconds.
///
/// Recording is an array increment; stored (serde) form lists only non-empty
/// buckets.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "StoredHistogram", into = "StoredHistogram")]
pub struct LatencyHistogram {
    /// Count per bucket index; empty until the first value.
    buckets: Vec<u64>,
    count: u64,
    /// The exact sum of recorded values, for the mean.
    sum_micros: u128,
    /// The largest recorded value.
    max_micros: u64,
}

/// The stored form: sparse buckets.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct StoredHistogram {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    buckets: BTreeMap<u16, u64>,
    #[serde(default)]
    sum_micros: u128,
    #[serde(default)]
    max_micros: u64,
}

/// A stored histogram names a bucket that does not exist.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("latency bucket {index} is out of range (0..{BUCKET_COUNT})")]
pub struct BucketOutOfRange {
    pub index: u16,
}

impl TryFrom<StoredHistogram> for LatencyHistogram {
    type Error = BucketOutOfRange;
    fn try_from(s: StoredHistogram) -> Result<Self, Self::Error> {
        let mut h = LatencyHistogram {
            sum_micros: s.sum_micros,
            max_micros: s.max_micros,
            ..LatencyHistogram::default()
        };
        for (index, n) in s.buckets {
            if usize::from(index) >= BUCKET_COUNT {
                return Err(BucketOutOfRange { index });
            }
            h.add(index, n);
        }
        Ok(h)
    }
}

impl From<LatencyHistogram> for StoredHistogram {
    fn from(h: LatencyHistogram) -> Self {
        StoredHistogram {
            buckets: h.non_empty().collect(),
            sum_micros: h.sum_micros,
            max_micros: h.max_micros,
        }
    }
}

impl LatencyHistogram {
    /// An empty histogram.
    pub fn new() -> Self {
        Self::default()
    }

    fn add(&mut self, index: u16, n: u64) {
        if n == 0 {
            return;
        }
        if self.buckets.is_empty() {
            self.buckets = vec![0; BUCKET_COUNT];
        }
        self.buckets[usize::from(index)] += n;
        self.count += n;
    }

    fn non_empty(&self) -> impl Iterator<Item = (u16, u64)> + '_ {
        // Indices are below BUCKET_COUNT (976), so they fit in a u16.
        self.buckets
            .iter()
            .enumerate()
            .filter(|(_, n)| **n > 0)
            .map(|(i, n)| (i as u16, *n))
    }

    /// Records one value in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.add(bucket_index(micros), 1);
        self.sum_micros += u128::from(micros);
        self.max_micros = self.max_micros.max(micros);
    }

    /// Records one duration (saturating at `u64::MAX` microseconds).
    pub fn record(&mut self, d: Duration) {
        self.record_micros(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    /// Adds every value of `other`.
    pub fn merge(&mut self, other: &LatencyHistogram) {
        for (i, n) in other.non_empty() {
            self.add(i, n);
        }
        self.sum_micros += other.sum_micros;
        self.max_micros = self.max_micros.max(other.max_micros);
    }

    /// The number of recorded values.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The exact mean in microseconds, if any value was recorded.
    pub fn mean_micros(&self) -> Option<f64> {
        let n = self.count();
        (n > 0).then(|| self.sum_micros as f64 / n as f64)
    }

    /// The largest recorded value.
    pub fn max_micros(&self) -> u64 {
        self.max_micros
    }

    /// The index of the bucket holding the `q`-quantile (`q` in `[0, 1]`).
    pub fn quantile_bucket(&self, q: f64) -> Option<u16> {
        let n = self.count();
        if n == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * n as f64).ceil() as u64).max(1);
        let mut seen = 0;
        let mut last = None;
        for (i, c) in self.non_empty() {
            seen += c;
            last = Some(i);
            if seen >= rank {
                return Some(i);
            }
        }
        last
    }

    /// The `q`-quantile, as the lower edge of its bucket (within 6.25 % below).
    pub fn quantile_micros(&self, q: f64) -> Option<u64> {
        self.quantile_bucket(q).map(bucket_lower)
    }

    /// How many values lie in buckets above `index`.
    pub fn count_above(&self, index: u16) -> u64 {
        self.buckets.iter().skip(usize::from(index) + 1).sum()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn bucket_edges() {
        assert_eq!(bucket_index(0), 0);
        assert_eq!(bucket_index(15), 15);
        assert_eq!(bucket_index(16), 16);
        assert_eq!(bucket_index(17), 17);
        assert_eq!(bucket_index(32), 32);
        assert_eq!(bucket_index(33), 32);
        assert_eq!(bucket_lower(32), 32);
        assert_eq!(bucket_lower(33), 34);
        assert_eq!(usize::from(bucket_index(u64::MAX)), BUCKET_COUNT - 1);
    }

    #[test]
    fn quantiles_and_means() {
        let mut h = LatencyHistogram::new();
        assert_eq!(h.quantile_micros(0.5), None);
        for ms in 1..=100u64 {
            h.record(Duration::from_millis(ms));
        }
        assert_eq!(h.count(), 100);
        assert_eq!(h.mean_micros(), Some(50_500.0));
        let p50 = h.quantile_micros(0.5).unwrap();
        assert!((47_000..=50_000).contains(&p50), "{p50}");
        assert_eq!(h.max_micros(), 100_000);
        let idx = h.quantile_bucket(0.5).unwrap();
        assert_eq!(
            h.count_above(idx),
            100 - (1..=100u64)
                .filter(|ms| bucket_index(ms * 1000) <= idx)
                .count() as u64
        );
    }

    #[test]
    fn stored_form_is_sparse_and_checked() {
        let mut h = LatencyHistogram::new();
        h.record_micros(3);
        h.record_micros(3);
        h.record_micros(40_000);
        let json = serde_json::to_string(&h).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"buckets":{{"3":2,"{}":1}},"sum_micros":40006,"max_micros":40000}}"#,
                bucket_index(40_000)
            )
        );
        assert_eq!(serde_json::from_str::<LatencyHistogram>(&json).unwrap(), h);
        assert_eq!(
            serde_json::to_string(&LatencyHistogram::new()).unwrap(),
            r#"{"sum_micros":0,"max_micros":0}"#
        );
        let err = serde_json::from_str::<LatencyHistogram>(r#"{"buckets":{"976":1}}"#).unwrap_err();
        assert!(
            err.to_string()
                .contains("latency bucket 976 is out of range"),
            "{err}"
        );
    }

    proptest! {
        #[test]
        fn value_lies_in_its_bucket(v in any::<u64>()) {
            let i = bucket_index(v);
            prop_assert!(bucket_lower(i) <= v);
            if i < 975 {
                prop_assert!(v < bucket_lower(i + 1));
                // The width is at most 1/16 of the lower edge above 16 µs.
                if v >= 16 {
                    prop_assert!(bucket_lower(i + 1) - bucket_lower(i) <= bucket_lower(i) / 16);
                }
            }
        }

        #[test]
        fn merge_equals_recording_everything(a in prop::collection::vec(0u64..10_000_000, 0..50), b in prop::collection::vec(0u64..10_000_000, 0..50)) {
            let mut ha = LatencyHistogram::new();
            let mut hb = LatencyHistogram::new();
            let mut all = LatencyHistogram::new();
            a.iter().for_each(|v| { ha.record_micros(*v); all.record_micros(*v) });
            b.iter().for_each(|v| { hb.record_micros(*v); all.record_micros(*v) });
            ha.merge(&hb);
            prop_assert_eq!(ha, all);
        }
    }
}
