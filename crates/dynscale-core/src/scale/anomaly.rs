//! Anomaly alerts on each pack's deny rate: an exponentially weighted mean and
//! variance per pack (Finch, "Incremental calculation of weighted mean and
//! variance", 2009) and the z-score of each interval's deny rate against them.
//!
//! Per interval the server drains a [`PackTally`] (decisions and denies per pack,
//! counted on the decision path) and feeds it to [`AnomalyDetector::observe`]. A
//! pack's z-score counts only after a warm-up of intervals, on intervals with enough
//! decisions, and against a standard deviation floored at `min_stddev` (a pack that
//! never denied would otherwise turn its first deny into an infinite z). Only rises
//! are anomalous: a pack suddenly denied more is the signal; denied less is not.
//! Anomalous intervals still update the baseline, so a lasting shift becomes the new
//! normal and its alert resolves. Memory is bounded: at most `max_packs` baselines,
//! idle ones evicted first, then the least recently seen.

use std::collections::HashMap;
use std::time::Duration;

use foldhash::fast::FixedState;
use serde::{Deserialize, Serialize};

use super::time::UnixMs;
use crate::ids::PackId;

/// Decisions and denies of one pack in one interval.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackCount {
    pub decisions: u64,
    pub denies: u64,
}

impl PackCount {
    fn add(&mut self, other: PackCount) {
        self.decisions = self.decisions.saturating_add(other.decisions);
        self.denies = self.denies.saturating_add(other.denies);
    }
}

/// Per-pack decision and deny counts of the current interval, holding at most
/// `max_packs` packs; decisions of further packs are counted in `overflow` only.
#[derive(Debug, Clone)]
pub struct PackTally {
    counts: HashMap<PackId, PackCount, FixedState>,
    max_packs: usize,
    overflow: PackCount,
}

impl PackTally {
    /// An empty tally. Pack ids come from requests, so `hash_seed` must be secret
    /// and random (the server draws it), or chosen ids could collide on purpose.
    pub fn new(max_packs: usize, hash_seed: u64) -> Self {
        PackTally {
            counts: HashMap::with_hasher(FixedState::with_seed(hash_seed)),
            max_packs,
            overflow: PackCount::default(),
        }
    }

    /// Counts one decision of `pack`.
    #[inline]
    pub fn record(&mut self, pack: &PackId, denied: bool) {
        let one = PackCount {
            decisions: 1,
            denies: u64::from(denied),
        };
        self.add(pack, one);
    }

    /// Adds `count` to `pack`'s counts.
    pub fn add(&mut self, pack: &PackId, count: PackCount) {
        if let Some(c) = self.counts.get_mut(pack) {
            c.add(count);
        } else if self.counts.len() < self.max_packs {
            self.counts.insert(pack.clone(), count);
        } else {
            self.overflow.add(count);
        }
    }

    /// Moves every count into `into`, leaving this tally empty (its table keeps its
    /// allocation).
    pub fn drain_into(&mut self, into: &mut PackTally) {
        for (pack, count) in self.counts.drain() {
            into.add(&pack, count);
        }
        into.overflow.add(std::mem::take(&mut self.overflow));
    }

    /// Number of packs counted.
    pub fn len(&self) -> usize {
        self.counts.len()
    }

    /// Whether no pack was counted.
    pub fn is_empty(&self) -> bool {
        self.counts.is_empty()
    }

    /// The counts per pack.
    pub fn iter(&self) -> impl Iterator<Item = (&PackId, &PackCount)> {
        self.counts.iter()
    }

    /// All decisions counted, overflow included.
    pub fn total(&self) -> PackCount {
        self.counts.values().fold(self.overflow, |mut acc, c| {
            acc.add(*c);
            acc
        })
    }

    /// Decisions of packs that found the tally full.
    pub fn overflow(&self) -> PackCount {
        self.overflow
    }
}

/// Settings of the deny-rate anomaly detector (`[scale.anomaly]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AnomalyConfig {
    /// Weight of the newest interval in the moving mean and variance (0 < α ≤ 1).
    /// 0.1 gives a memory of roughly ten intervals.
    pub alpha: f64,
    /// The z-score at or above which an interval is anomalous.
    pub z_threshold: f64,
    /// Intervals a pack must have been observed before its z-score counts.
    pub warmup_intervals: u32,
    /// Intervals with fewer decisions for a pack are skipped for it: their deny rate
    /// is too noisy to judge.
    pub min_decisions: u64,
    /// Floor of the standard deviation, as a deny-rate fraction (0.02 = 2 points).
    pub min_stddev: f64,
    /// Most packs tracked at once (baselines and tallies).
    pub max_packs: usize,
    /// A pack not seen for this long is forgotten.
    #[serde(with = "super::config::human_duration")]
    pub idle_after: Duration,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        AnomalyConfig {
            alpha: 0.1,
            z_threshold: 4.0,
            warmup_intervals: 12,
            min_decisions: 20,
            min_stddev: 0.02,
            max_packs: 10_000,
            idle_after: Duration::from_secs(3600),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Baseline {
    mean: f64,
    variance: f64,
    intervals: u32,
    last_seen: UnixMs,
}

/// One pack's deny rate in one interval, judged against its baseline.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PackReading {
    pub pack: PackId,
    pub decisions: u64,
    /// Denies over decisions in this interval.
    pub deny_rate: f64,
    /// The baseline before this interval.
    pub mean: f64,
    pub stddev: f64,
    /// `None` while warming up.
    pub z: Option<f64>,
    pub anomalous: bool,
}

/// Moving baselines of every tracked pack's deny rate.
#[derive(Debug, Clone)]
pub struct AnomalyDetector {
    config: AnomalyConfig,
    packs: HashMap<PackId, Baseline, FixedState>,
}

impl AnomalyDetector {
    /// A detector with no baselines yet. `hash_seed` as for [`PackTally::new`].
    pub fn new(config: AnomalyConfig, hash_seed: u64) -> Self {
        AnomalyDetector {
            config,
            packs: HashMap::with_hasher(FixedState::with_seed(hash_seed)),
        }
    }

    /// Judges one interval's counts of every pack in `tally` and updates the
    /// baselines; forgets packs idle for `idle_after` first. Returns one reading per
    /// pack with enough decisions, in pack order.
    pub fn observe(&mut self, now: UnixMs, tally: &PackTally) -> Vec<PackReading> {
        let idle_after = self.config.idle_after;
        self.packs
            .retain(|_, b| now.saturating_since(b.last_seen) < idle_after);
        let mut readings = Vec::new();
        for (pack, count) in tally.iter() {
            if let Some(r) = self.observe_one(now, pack, *count) {
                readings.push(r);
            }
        }
        readings.sort_by(|a, b| a.pack.cmp(&b.pack));
        readings
    }

    fn observe_one(&mut self, now: UnixMs, pack: &PackId, count: PackCount) -> Option<PackReading> {
        let cfg = &self.config;
        if let Some(b) = self.packs.get_mut(pack) {
            b.last_seen = now;
        }
        if count.decisions < cfg.min_decisions || count.decisions == 0 {
            return None;
        }
        let rate = count.denies.min(count.decisions) as f64 / count.decisions as f64;
        let Some(b) = self.packs.get_mut(pack) else {
            if self.packs.len() >= cfg.max_packs {
                self.evict_least_recent();
            }
            if self.packs.len() < self.config.max_packs {
                self.packs.insert(
                    pack.clone(),
                    Baseline {
                        mean: rate,
                        variance: 0.0,
                        intervals: 1,
                        last_seen: now,
                    },
                );
            }
            return Some(PackReading {
                pack: pack.clone(),
                decisions: count.decisions,
                deny_rate: rate,
                mean: rate,
                stddev: 0.0,
                z: None,
                anomalous: false,
            });
        };
        let (mean, stddev) = (b.mean, b.variance.sqrt());
        let z = (b.intervals >= cfg.warmup_intervals)
            .then(|| (rate - mean) / stddev.max(cfg.min_stddev));
        let anomalous = z.is_some_and(|z| z >= cfg.z_threshold);
        // Finch's incremental exponentially weighted mean and variance.
        let diff = rate - b.mean;
        let incr = cfg.alpha * diff;
        b.mean += incr;
        b.variance = (1.0 - cfg.alpha) * (b.variance + diff * incr);
        b.intervals = b.intervals.saturating_add(1);
        Some(PackReading {
            pack: pack.clone(),
            decisions: count.decisions,
            deny_rate: rate,
            mean,
            stddev,
            z,
            anomalous,
        })
    }

    fn evict_least_recent(&mut self) {
        let oldest = self
            .packs
            .iter()
            .min_by_key(|(_, b)| b.last_seen)
            .map(|(p, _)| p.clone());
        if let Some(p) = oldest {
            self.packs.remove(&p);
        }
    }

    /// Number of packs with a baseline.
    pub fn tracked(&self) -> usize {
        self.packs.len()
    }

    /// The settings in force.
    pub fn config(&self) -> &AnomalyConfig {
        &self.config
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn tally(entries: &[(&str, u64, u64)]) -> PackTally {
        let mut t = PackTally::new(100, 7);
        for &(p, decisions, denies) in entries {
            t.add(&PackId::new(p), PackCount { decisions, denies });
        }
        t
    }

    fn at(interval: u64) -> UnixMs {
        UnixMs(interval * 10_000)
    }

    #[test]
    fn a_jump_after_warm_up_is_anomalous_and_becomes_normal() {
        let mut d = AnomalyDetector::new(AnomalyConfig::default(), 1);
        // Twelve warm-up intervals at a 5 % deny rate, with small noise.
        for i in 0..12 {
            let denies = 5 + (i % 2);
            let r = d.observe(at(i), &tally(&[("billing", 100, denies)]));
            assert!(!r[0].anomalous, "warm-up interval {i}");
        }
        let r = d.observe(at(12), &tally(&[("billing", 100, 6)]));
        assert!(r[0].z.is_some() && !r[0].anomalous, "{r:?}");
        let r = d.observe(at(13), &tally(&[("billing", 100, 60)]));
        assert!(r[0].anomalous, "{r:?}");
        // The new rate lasts: the baseline follows and the anomaly ends.
        let mut last = true;
        for i in 14..60 {
            last = d.observe(at(i), &tally(&[("billing", 100, 60)]))[0].anomalous;
        }
        assert!(!last);
    }

    #[test]
    fn warm_up_low_volume_and_drops_are_not_anomalous() {
        let cfg = AnomalyConfig {
            warmup_intervals: 3,
            ..AnomalyConfig::default()
        };
        let mut d = AnomalyDetector::new(cfg, 1);
        // A spike during warm-up: no z-score yet.
        d.observe(at(0), &tally(&[("p", 100, 1)]));
        let r = d.observe(at(1), &tally(&[("p", 100, 90)]));
        assert_eq!(r[0].z, None);
        let mut d = AnomalyDetector::new(
            AnomalyConfig {
                warmup_intervals: 3,
                ..AnomalyConfig::default()
            },
            1,
        );
        for i in 0..5 {
            d.observe(at(i), &tally(&[("p", 100, 50)]));
        }
        // Too few decisions: no reading at all.
        assert!(d.observe(at(5), &tally(&[("p", 5, 5)])).is_empty());
        // A drop to zero denies has a negative z: not anomalous.
        let r = d.observe(at(6), &tally(&[("p", 100, 0)]));
        assert!(r[0].z.unwrap() < 0.0 && !r[0].anomalous);
    }

    #[test]
    fn a_steady_zero_pack_is_judged_against_the_floor() {
        let cfg = AnomalyConfig {
            warmup_intervals: 2,
            ..AnomalyConfig::default()
        };
        let mut d = AnomalyDetector::new(cfg, 1);
        for i in 0..5 {
            d.observe(at(i), &tally(&[("quiet", 100, 0)]));
        }
        // One deny in 100 is 0.5 floor-sigmas: finite and calm.
        let r = d.observe(at(5), &tally(&[("quiet", 100, 1)]));
        assert!((r[0].z.unwrap() - 0.5).abs() < 1e-9, "{r:?}");
        assert!(!r[0].anomalous);
        let r = d.observe(at(6), &tally(&[("quiet", 100, 20)]));
        assert!(r[0].anomalous, "{r:?}");
    }

    #[test]
    fn idle_packs_are_forgotten_and_the_bound_holds() {
        let cfg = AnomalyConfig {
            max_packs: 3,
            idle_after: Duration::from_secs(60),
            ..AnomalyConfig::default()
        };
        let mut d = AnomalyDetector::new(cfg, 1);
        d.observe(at(0), &tally(&[("a", 50, 1), ("b", 50, 1), ("c", 50, 1)]));
        d.observe(at(1), &tally(&[("a", 50, 1), ("b", 50, 1)]));
        // The table is full: "d" evicts the least recently seen, "c".
        d.observe(at(2), &tally(&[("d", 50, 1)]));
        assert_eq!(d.tracked(), 3);
        assert!(!d.packs.contains_key(&PackId::new("c")));
        // At 90 s everything is idle (a minute or more unseen) and forgotten; "a"
        // comes back with a fresh baseline.
        d.observe(at(9), &tally(&[("a", 50, 1)]));
        assert_eq!(d.tracked(), 1);
    }

    #[test]
    fn tallies_are_bounded_and_drain() {
        let mut t = PackTally::new(2, 3);
        for (p, denied) in [("a", true), ("b", false), ("c", true), ("a", false)] {
            t.record(&PackId::new(p), denied);
        }
        assert_eq!(t.len(), 2);
        assert_eq!(
            t.overflow(),
            PackCount {
                decisions: 1,
                denies: 1
            }
        );
        let mut into = PackTally::new(10, 3);
        t.drain_into(&mut into);
        assert!(t.is_empty());
        assert_eq!(t.overflow(), PackCount::default());
        let a = into.iter().find(|(p, _)| p.as_str() == "a").unwrap().1;
        assert_eq!(
            *a,
            PackCount {
                decisions: 2,
                denies: 1
            }
        );
        assert_eq!(into.overflow().decisions, 1);
    }

    proptest! {
        /// The moving mean stays within the range of the rates seen, the variance is
        /// never negative, and the table never exceeds its bound.
        #[test]
        fn baselines_stay_sane(
            steps in proptest::collection::vec((0usize..8, 20u64..200, 0u64..200), 1..300),
        ) {
            let cfg = AnomalyConfig { max_packs: 4, ..AnomalyConfig::default() };
            let mut d = AnomalyDetector::new(cfg, 9);
            for (i, (pack, decisions, denies)) in steps.into_iter().enumerate() {
                let name = format!("p{pack}");
                d.observe(at(i as u64), &tally(&[(&name, decisions, denies)]));
                prop_assert!(d.tracked() <= 4);
                for b in d.packs.values() {
                    prop_assert!((0.0..=1.0).contains(&b.mean));
                    prop_assert!(b.variance >= 0.0);
                }
            }
        }
    }
}
