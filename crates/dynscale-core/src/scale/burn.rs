//! Multi-window burn-rate alerts on the decision SLO (Google SRE workbook, ch. 5,
//! "multiwindow, multi-burn-rate alerts").
//!
//! A decision is good when it was answered within the latency objective and without
//! error (a deny is a good decision). The burn rate over a window is the share of bad
//! decisions divided by the error budget `1 − target`: at 1× the budget lasts exactly
//! the SLO period. A tier fires when both its long and its short window burn at least
//! its factor; the short window makes the alert stop soon after the burning does.
//! Defaults: page at 14.4× over 1 h and 5 min (2 % of a 30-day budget in an hour),
//! ticket at 6× over 6 h and 30 min (5 % in six hours).

use serde::{Deserialize, Serialize};

use super::ring::Bucket;

/// Good and bad decisions in one interval or window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EventCounts {
    pub good: u64,
    pub bad: u64,
}

impl EventCounts {
    /// Counts one decision.
    #[inline]
    pub fn record(&mut self, good: bool) {
        if good {
            self.good += 1;
        } else {
            self.bad += 1;
        }
    }

    /// Adds `other` into these counts.
    pub fn add(&mut self, other: &EventCounts) {
        self.good = self.good.saturating_add(other.good);
        self.bad = self.bad.saturating_add(other.bad);
    }

    /// All decisions counted.
    pub fn total(&self) -> u64 {
        self.good.saturating_add(self.bad)
    }

    /// The burn rate against `target` (e.g. 0.999); `None` without any decision.
    pub fn burn_rate(&self, target: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let bad_share = self.bad as f64 / total as f64;
        Some(bad_share / (1.0 - target))
    }
}

impl Bucket for EventCounts {
    fn clear(&mut self) {
        *self = EventCounts::default();
    }
}

/// Which burn-rate tier.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BurnTier {
    /// Fast burn: someone should act now.
    Page,
    /// Slow burn: someone should look within the working day.
    Ticket,
}

impl BurnTier {
    /// Both tiers.
    pub const ALL: [BurnTier; 2] = [BurnTier::Page, BurnTier::Ticket];

    /// The tier's name in alerts and configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            BurnTier::Page => "page",
            BurnTier::Ticket => "ticket",
        }
    }
}

/// One tier's reading: the burn rates of both windows and whether it fires.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BurnReading {
    pub tier: BurnTier,
    /// Burn rate over the long window; `None` without decisions.
    pub long_rate: Option<f64>,
    /// Burn rate over the short window; `None` without decisions.
    pub short_rate: Option<f64>,
    /// The factor both must reach.
    pub factor: f64,
    /// Whether both windows burn at least `factor` and the short window holds at
    /// least the configured minimum of decisions.
    pub burning: bool,
}

/// Evaluates one tier from the counts of its two windows. `min_events` guards
/// against paging on one bad decision out of three at night: the short window must
/// hold at least that many decisions.
pub fn evaluate_tier(
    tier: BurnTier,
    factor: f64,
    target: f64,
    long: &EventCounts,
    short: &EventCounts,
    min_events: u64,
) -> BurnReading {
    let long_rate = long.burn_rate(target);
    let short_rate = short.burn_rate(target);
    // A rate exactly at the factor reaches it; the tolerance absorbs the rounding of
    // the divisions (144 bad of 10 000 at 99.9 % computes as 14.399…).
    let reaches = |rate: Option<f64>| rate.is_some_and(|r| r >= factor * (1.0 - 1e-9));
    let burning = short.total() >= min_events && reaches(long_rate) && reaches(short_rate);
    BurnReading {
        tier,
        long_rate,
        short_rate,
        factor,
        burning,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(good: u64, bad: u64) -> EventCounts {
        EventCounts { good, bad }
    }

    #[test]
    fn burn_rate_is_bad_share_over_budget() {
        assert_eq!(counts(0, 0).burn_rate(0.999), None);
        let r = counts(999, 1).burn_rate(0.999).unwrap();
        assert!((r - 1.0).abs() < 1e-9, "{r}");
        let r = counts(9856, 144).burn_rate(0.999).unwrap();
        assert!((r - 14.4).abs() < 1e-9, "{r}");
        let r = counts(0, 10).burn_rate(0.99).unwrap();
        assert!((r - 100.0).abs() < 1e-9, "{r}");
    }

    #[test]
    fn a_tier_fires_only_when_both_windows_burn() {
        let page = |long: EventCounts, short: EventCounts, min: u64| {
            evaluate_tier(BurnTier::Page, 14.4, 0.999, &long, &short, min).burning
        };
        // (long, short, min events, fires?)
        let table = [
            (counts(9_800, 200), counts(980, 20), 0, true), // 20× and 20×
            (counts(9_800, 200), counts(1_000, 0), 0, false), // burning stopped
            (counts(9_990, 10), counts(980, 20), 0, false), // short spike only
            (counts(9_856, 144), counts(9_856, 144), 0, true), // exactly the factor
            (counts(9_857, 143), counts(9_856, 144), 0, false), // just under on long
            (counts(0, 0), counts(0, 5), 0, false),         // no long data
            (counts(9_800, 200), counts(2, 1), 10, false),  // too few in short window
            (counts(9_800, 200), counts(8, 2), 10, true),   // enough
        ];
        for (i, (long, short, min, want)) in table.into_iter().enumerate() {
            assert_eq!(page(long, short, min), want, "row {i}");
        }
    }

    #[test]
    fn counts_record_add_and_clear() {
        let mut c = EventCounts::default();
        c.record(true);
        c.record(false);
        c.record(true);
        assert_eq!(c, counts(2, 1));
        c.add(&counts(3, 4));
        assert_eq!(c.total(), 10);
        c.clear();
        assert_eq!(c.total(), 0);
    }
}
