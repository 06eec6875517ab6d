//! Storage time-to-full: a least-squares line through recent (time, bytes used)
//! samples, extended to the capacity.
//!
//! The server feeds the bytes used at every evaluation; one sample is kept per
//! `sample_every`, over the last `window`, so memory is bounded by
//! `window / sample_every`. The line is evaluated at `now` (not at the last sample)
//! the way Prometheus' `predict_linear` is, which smooths a single noisy reading.

use std::collections::VecDeque;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::time::UnixMs;

/// Settings of the storage forecast and its alert (`[scale.forecast]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForecastConfig {
    /// At most one sample is kept per this interval.
    #[serde(with = "super::config::human_duration")]
    pub sample_every: Duration,
    /// Samples older than this are dropped.
    #[serde(with = "super::config::human_duration")]
    pub window: Duration,
    /// Fewer samples than this give no forecast.
    pub min_samples: usize,
    /// The predictive alert fires when storage is predicted full within this.
    #[serde(with = "super::config::human_duration")]
    pub horizon: Duration,
}

impl Default for ForecastConfig {
    fn default() -> Self {
        ForecastConfig {
            sample_every: Duration::from_secs(60),
            window: Duration::from_secs(6 * 3600),
            min_samples: 10,
            horizon: Duration::from_secs(24 * 3600),
        }
    }
}

/// What the forecast says about storage.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Forecast {
    /// Too few samples, or the capacity is unknown.
    Unknown,
    /// Usage is flat or falling.
    NotFilling,
    /// Predicted full after this long (zero: full now).
    FullIn(Duration),
}

/// The recent samples of bytes used.
#[derive(Debug, Clone)]
pub struct StorageForecaster {
    config: ForecastConfig,
    samples: VecDeque<(UnixMs, u64)>,
}

impl StorageForecaster {
    /// A forecaster with no samples.
    pub fn new(config: ForecastConfig) -> Self {
        StorageForecaster {
            config,
            samples: VecDeque::new(),
        }
    }

    /// Takes a reading of the bytes used at `now`: kept if `sample_every` has passed
    /// since the last kept one. Samples older than the window are dropped; a reading
    /// earlier than the last kept one (the clock stepped back) clears the history.
    pub fn observe(&mut self, now: UnixMs, used_bytes: u64) {
        if let Some(&(last, _)) = self.samples.back() {
            if now < last {
                self.samples.clear();
            } else if now.saturating_since(last) < self.config.sample_every {
                return;
            }
        }
        self.samples.push_back((now, used_bytes));
        while let Some(&(first, _)) = self.samples.front() {
            if now.saturating_since(first) > self.config.window {
                self.samples.pop_front();
            } else {
                break;
            }
        }
    }

    /// The forecast at `now` for a volume of `capacity_bytes`.
    pub fn forecast(&self, now: UnixMs, capacity_bytes: Option<u64>) -> Forecast {
        let Some(capacity) = capacity_bytes else {
            return Forecast::Unknown;
        };
        if self.samples.len() < self.config.min_samples.max(2) {
            return Forecast::Unknown;
        }
        time_to_full(self.samples.iter().copied(), now, capacity)
    }

    /// Number of samples kept.
    pub fn len(&self) -> usize {
        self.samples.len()
    }

    /// Whether no sample is kept.
    pub fn is_empty(&self) -> bool {
        self.samples.is_empty()
    }
}

/// Least-squares time to full over `samples` (at least two at distinct times),
/// evaluated at `now`. Usage at or above capacity in the last sample is full now.
pub fn time_to_full(
    samples: impl Iterator<Item = (UnixMs, u64)> + Clone,
    now: UnixMs,
    capacity: u64,
) -> Forecast {
    let Some(t0) = samples.clone().next().map(|(t, _)| t) else {
        return Forecast::Unknown;
    };
    if samples
        .clone()
        .last()
        .is_some_and(|(_, used)| used >= capacity)
    {
        return Forecast::FullIn(Duration::ZERO);
    }
    // Seconds since the first sample keep the x values small, so f64 sums stay
    // exact enough for days of samples.
    let x = |t: UnixMs| t.saturating_since(t0).as_secs_f64();
    let n = samples.clone().count() as f64;
    let (sx, sy) = samples.clone().fold((0.0, 0.0), |(sx, sy), (t, used)| {
        (sx + x(t), sy + used as f64)
    });
    let (mx, my) = (sx / n, sy / n);
    let (sxy, sxx) = samples.fold((0.0, 0.0), |(sxy, sxx), (t, used)| {
        let dx = x(t) - mx;
        (sxy + dx * (used as f64 - my), sxx + dx * dx)
    });
    if sxx <= 0.0 {
        return Forecast::Unknown;
    }
    let slope = sxy / sxx;
    if slope <= 0.0 {
        return Forecast::NotFilling;
    }
    let fitted_now = my + slope * (x(now) - mx);
    let remaining = capacity as f64 - fitted_now;
    if remaining <= 0.0 {
        return Forecast::FullIn(Duration::ZERO);
    }
    Forecast::FullIn(Duration::try_from_secs_f64(remaining / slope).unwrap_or(Duration::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn secs(s: u64) -> UnixMs {
        UnixMs(1_700_000_000_000 + s * 1000)
    }

    #[test]
    fn a_steady_fill_is_extended_to_the_capacity() {
        // 1 MB per minute from 100 MB; capacity 1000 MB.
        let mut f = StorageForecaster::new(ForecastConfig::default());
        for m in 0..30u64 {
            f.observe(secs(m * 60), 100_000_000 + m * 1_000_000);
        }
        // At minute 29 usage is 129 MB: 871 more minutes to go.
        let Forecast::FullIn(d) = f.forecast(secs(29 * 60), Some(1_000_000_000)) else {
            panic!("expected a forecast");
        };
        assert!((d.as_secs_f64() - 871.0 * 60.0).abs() < 1.0, "{d:?}");
        // Unknown capacity, too few samples, flat and falling usage.
        assert_eq!(f.forecast(secs(29 * 60), None), Forecast::Unknown);
        let mut few = StorageForecaster::new(ForecastConfig::default());
        few.observe(secs(0), 1);
        few.observe(secs(60), 2);
        assert_eq!(few.forecast(secs(60), Some(10)), Forecast::Unknown);
        let flat = (0..10).map(|m| (secs(m * 60), 500));
        assert_eq!(time_to_full(flat, secs(600), 1000), Forecast::NotFilling);
        let falling = (0..10).map(|m| (secs(m * 60), 900 - m));
        assert_eq!(time_to_full(falling, secs(600), 1000), Forecast::NotFilling);
        let full = (0..10).map(|m| (secs(m * 60), 990 + m));
        assert_eq!(
            time_to_full(full, secs(600), 999),
            Forecast::FullIn(Duration::ZERO)
        );
    }

    #[test]
    fn samples_are_thinned_windowed_and_reset_on_a_clock_step_back() {
        let cfg = ForecastConfig {
            sample_every: Duration::from_secs(60),
            window: Duration::from_secs(600),
            ..ForecastConfig::default()
        };
        let mut f = StorageForecaster::new(cfg);
        for s in (0..1200).step_by(10) {
            f.observe(secs(s), s);
        }
        // One per minute, the last ten minutes (inclusive ends): 11 samples.
        assert_eq!(f.len(), 11);
        f.observe(secs(5), 1);
        assert_eq!(f.len(), 1);
    }

    proptest! {
        /// On exactly linear growth the forecast is the exact remaining time.
        #[test]
        fn exact_on_lines(
            start in 0u64..1_000_000_000,
            per_min in 1u64..10_000_000,
            n in 2u64..100,
            headroom in 1u64..1_000_000_000_000,
        ) {
            let samples: Vec<_> = (0..n).map(|m| (secs(m * 60), start + m * per_min)).collect();
            let last = start + (n - 1) * per_min;
            let capacity = last + headroom;
            let Forecast::FullIn(d) = time_to_full(samples.into_iter(), secs((n - 1) * 60), capacity) else {
                panic!("expected a forecast");
            };
            let want = headroom as f64 / per_min as f64 * 60.0;
            prop_assert!((d.as_secs_f64() - want).abs() <= want * 1e-6 + 1e-3, "{:?} vs {}", d, want);
        }
    }
}
