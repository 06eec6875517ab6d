//! `TimeRing`: a fixed ring of per-interval buckets, the sliding window under every
//! windowed signal (latency sketches, SLO event counts).
//!
//! Interval `i` covers `[i·interval, (i+1)·interval)` milliseconds since the epoch
//! and lives in slot `i mod slots`. A slot still holding an older interval is cleared
//! when a newer one needs it; a sample for an interval older than the one its slot
//! holds is too old for the ring and is dropped (and counted). Reads merge the slots
//! of the last `k` intervals, the current partial one included.

use std::time::Duration;

use super::time::{UnixMs, millis};

/// What a ring's bucket must support: being emptied for reuse by a later interval.
pub trait Bucket {
    /// Empties the bucket, keeping its allocation.
    fn clear(&mut self);
}

/// A ring of `slots` buckets of `interval` each, retaining `slots · interval`.
#[derive(Debug, Clone)]
pub struct TimeRing<T> {
    interval_ms: u64,
    slots: Vec<Slot<T>>,
    started: UnixMs,
    late: u64,
}

#[derive(Debug, Clone)]
struct Slot<T> {
    /// The interval this slot holds; `None` before first use.
    interval: Option<u64>,
    bucket: T,
}

impl<T: Bucket> TimeRing<T> {
    /// A ring retaining at least `retention`, in buckets of `interval` (at least
    /// 1 ms), made by `make`. `started` is when recording began: windows never
    /// claim to cover time before it.
    pub fn new(
        interval: Duration,
        retention: Duration,
        started: UnixMs,
        mut make: impl FnMut() -> T,
    ) -> Self {
        let interval_ms = millis(interval).max(1);
        let slots = usize::try_from(millis(retention).div_ceil(interval_ms))
            .unwrap_or(usize::MAX)
            .max(1);
        TimeRing {
            interval_ms,
            slots: (0..slots)
                .map(|_| Slot {
                    interval: None,
                    bucket: make(),
                })
                .collect(),
            started,
            late: 0,
        }
    }

    /// The bucket for the interval holding `now`, cleared first if its slot held an
    /// older interval; `None` if the slot already holds a newer interval (the
    /// sample is older than the ring retains), which is counted in [`Self::late`].
    pub fn bucket_mut(&mut self, now: UnixMs) -> Option<&mut T> {
        let index = now.0 / self.interval_ms;
        let len = self.slots.len() as u64;
        // The remainder is below `slots.len()`, so it fits a usize.
        let slot = &mut self.slots[(index % len) as usize];
        match slot.interval {
            Some(held) if held == index => {}
            Some(held) if held > index => {
                self.late += 1;
                return None;
            }
            _ => {
                slot.bucket.clear();
                slot.interval = Some(index);
            }
        }
        Some(&mut slot.bucket)
    }

    /// The buckets of the window of `span` ending at `now` (whole intervals, the
    /// current partial one included; at most the ring's retention) and the time the
    /// window really covers: from the start of its oldest interval, or from
    /// `started` if later, to `now`.
    pub fn window(&self, now: UnixMs, span: Duration) -> (impl Iterator<Item = &T>, Duration) {
        let current = now.0 / self.interval_ms;
        let len = self.slots.len() as u64;
        let k = millis(span).div_ceil(self.interval_ms).clamp(1, len);
        let oldest = current.saturating_sub(k - 1);
        let start = UnixMs(oldest.saturating_mul(self.interval_ms)).max(self.started);
        let covered = now.saturating_since(start);
        let buckets = self
            .slots
            .iter()
            .filter(move |s| matches!(s.interval, Some(i) if i >= oldest && i <= current))
            .map(|s| &s.bucket);
        (buckets, covered)
    }

    /// The longest window this ring can answer.
    pub fn retention(&self) -> Duration {
        Duration::from_millis(self.interval_ms.saturating_mul(self.slots.len() as u64))
    }

    /// The bucket length.
    pub fn interval(&self) -> Duration {
        Duration::from_millis(self.interval_ms)
    }

    /// Samples dropped because they were older than the ring retains.
    pub fn late(&self) -> u64 {
        self.late
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    impl Bucket for u64 {
        fn clear(&mut self) {
            *self = 0;
        }
    }

    fn sum(ring: &TimeRing<u64>, now: u64, span_ms: u64) -> (u64, Duration) {
        let (buckets, covered) = ring.window(UnixMs(now), Duration::from_millis(span_ms));
        (buckets.sum(), covered)
    }

    #[test]
    fn windows_count_whole_intervals_and_the_partial_one() {
        let mut ring = TimeRing::new(
            Duration::from_secs(10),
            Duration::from_secs(60),
            UnixMs(0),
            || 0u64,
        );
        for t in (0..120_000).step_by(1000) {
            *ring.bucket_mut(UnixMs(t)).unwrap() += 1;
        }
        // At 119.999 s: the current interval [110, 120) holds 10 samples.
        assert_eq!(
            sum(&ring, 119_999, 10_000),
            (10, Duration::from_millis(9_999))
        );
        assert_eq!(
            sum(&ring, 119_999, 30_000),
            (30, Duration::from_millis(29_999))
        );
        // Longer than retention is clamped to the six slots.
        assert_eq!(sum(&ring, 119_999, 600_000).0, 60);
        assert_eq!(ring.retention(), Duration::from_secs(60));
    }

    #[test]
    fn windows_do_not_claim_time_before_the_start() {
        let ring = TimeRing::new(
            Duration::from_secs(10),
            Duration::from_secs(60),
            UnixMs(25_000),
            || 0u64,
        );
        assert_eq!(sum(&ring, 27_000, 60_000).1, Duration::from_secs(2));
    }

    #[test]
    fn samples_older_than_the_ring_are_dropped_and_counted() {
        let mut ring = TimeRing::new(
            Duration::from_secs(1),
            Duration::from_secs(3),
            UnixMs(0),
            || 0u64,
        );
        *ring.bucket_mut(UnixMs(5_000)).unwrap() += 1;
        // Interval 2 shares slot 2 with interval 5, which is newer.
        assert!(ring.bucket_mut(UnixMs(2_500)).is_none());
        assert_eq!(ring.late(), 1);
        // Interval 4 is late but still in the ring.
        *ring.bucket_mut(UnixMs(4_500)).unwrap() += 1;
        assert_eq!(sum(&ring, 5_000, 3_000).0, 2);
    }

    proptest! {
        /// Against a model that keeps every sample: a window's sum is the number of
        /// kept samples in its intervals, for any in-order sample times.
        #[test]
        fn window_sums_match_a_model(
            gaps in proptest::collection::vec(0u64..5_000, 1..200),
            interval in 1u64..3_000,
            slots in 1u64..12,
            span in 1u64..40_000,
        ) {
            let mut ring = TimeRing::new(
                Duration::from_millis(interval),
                Duration::from_millis(interval * slots),
                UnixMs(0),
                || 0u64,
            );
            let mut times = Vec::new();
            let mut t = 0;
            for g in gaps {
                t += g;
                *ring.bucket_mut(UnixMs(t)).unwrap() += 1;
                times.push(t);
            }
            let current = t / interval;
            let k = span.div_ceil(interval).clamp(1, slots);
            let oldest = current.saturating_sub(k - 1);
            let expected = times.iter().filter(|&&s| s / interval >= oldest).count() as u64;
            prop_assert_eq!(sum(&ring, t, span).0, expected);
        }
    }
}
