//! GCRA, the generic cell rate algorithm: one rate limit applied to one key's state.
//!
//! A rule allows `count` cells per `per`, so one cell is worth the emission interval
//! `T = per / count`, and a fresh key may spend `burst` cells at once (tolerance
//! `τ = T × (burst − 1)`). The whole state of a key is one instant, its theoretical
//! arrival time (TAT): the time at which the key would be back to "no debt". A TAT at
//! or before `now` means the same as a key never seen, which is what lets the limiter
//! drop idle keys without changing any decision.
//!
//! # Exactness when `T` is not a whole number of nanoseconds
//!
//! `3/s` gives `T = 333 333 333.3… ns`. Rounding `T` and adding it up would drift by a
//! fraction of a nanosecond per cell, which over a long busy period breaks the
//! "`R·t + B` ± 1" accuracy promise at high rates. Instead time is counted in whole
//! cells: `cells(t) = ⌊t · count / per⌋`, and a TAT is always stored as the first
//! nanosecond of a cell, `start(j) = ⌈j · per / count⌉`. Because `T ≥ 1 ns`, `j` is
//! recovered exactly as `cells(start(j))`, so the stored value is a plain nanosecond
//! instant (comparable across rules, which eviction needs) that carries no rounding
//! error from one request to the next. The only rounding is the floor of `now` to its
//! cell, which costs at most one cell over any span, never more.

use std::time::Duration;

use crate::document::{QuotaRule, Rate};

use super::time::Nanos;

/// The longest debt (`burst × T`) a rule may describe. It keeps every stored TAT far
/// from the end of the `u64` range for any epoch a caller can reasonably choose.
const MAX_BURST_SPAN_NS: u128 = 1 << 62;

/// Why a quota rule cannot be turned into a GCRA limit.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GcraError {
    #[error("rate count must be at least 1")]
    ZeroCount,
    #[error("burst must be at least 1")]
    ZeroBurst,
    #[error("rate {count} per {per:?} allows more than one action per nanosecond")]
    TooFast { count: u64, per: Duration },
    #[error("rate period {per:?} does not fit in 64-bit nanoseconds")]
    PeriodTooLong { per: Duration },
    #[error("burst {burst} at {count} per {per:?} describes a debt of more than 146 years")]
    BurstTooLong {
        burst: u64,
        count: u64,
        per: Duration,
    },
}

/// The outcome of one quota check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The request passes; its cost has been charged to the key.
    Allow,
    /// The request does not pass now. Asking again `retry_after` from now, with the
    /// same cost and no other traffic on the key, passes; asking any earlier does not.
    Throttle { retry_after: Duration },
    /// The cost is larger than the burst, so the request can never pass on this rule.
    /// It gets its own verdict because no `retry_after` would be true.
    OverBurst { cost: u64, burst: u64 },
}

impl Verdict {
    /// Whether the request passes.
    pub fn is_allow(&self) -> bool {
        matches!(self, Verdict::Allow)
    }

    /// When to ask again, if asking again can help.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Verdict::Throttle { retry_after } => Some(*retry_after),
            Verdict::Allow | Verdict::OverBurst { .. } => None,
        }
    }
}

/// One rate limit: `count` cells per `per`, up to `burst` cells at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gcra {
    count: u64,
    per_ns: u64,
    burst: u64,
    /// `T` in nanoseconds when it is a whole number, which is the common case
    /// (`100/s`, `6000/min`). The arithmetic is then plain `u64`; otherwise it goes
    /// through `u128`. Both give the same answers (a property test checks it).
    whole_interval: Option<u64>,
}

impl Gcra {
    /// The limit for `rate` with room for `burst` cells at once.
    pub fn new(rate: Rate, burst: u64) -> Result<Self, GcraError> {
        let Rate { count, per } = rate;
        if count == 0 {
            return Err(GcraError::ZeroCount);
        }
        if burst == 0 {
            return Err(GcraError::ZeroBurst);
        }
        let per_ns = u64::try_from(per.as_nanos()).map_err(|_| GcraError::PeriodTooLong { per })?;
        // `T ≥ 1 ns` is what makes a stored TAT map back to exactly one cell.
        if per_ns < count {
            return Err(GcraError::TooFast { count, per });
        }
        if u128::from(burst) * u128::from(per_ns) / u128::from(count) > MAX_BURST_SPAN_NS {
            return Err(GcraError::BurstTooLong { burst, count, per });
        }
        Ok(Gcra {
            count,
            per_ns,
            burst,
            whole_interval: per_ns.is_multiple_of(count).then_some(per_ns / count),
        })
    }

    /// The limit a policy's quota rule describes (its `cost` field is read per request).
    pub fn from_rule(rule: &QuotaRule) -> Result<Self, GcraError> {
        Gcra::new(rule.rate, rule.burst)
    }

    /// The most cells a fresh key may spend at once.
    pub fn burst(&self) -> u64 {
        self.burst
    }

    /// The emission interval `T`, rounded down to whole nanoseconds (for display;
    /// decisions use the exact value).
    pub fn emission_interval(&self) -> Duration {
        Duration::from_nanos(self.per_ns / self.count)
    }

    /// Decides one request of `cost` cells against a key whose TAT is `tat`
    /// (`Nanos::ZERO` for a key never seen). Returns the verdict and the key's TAT
    /// after it: moved on when the request passes, unchanged otherwise.
    pub fn decide(&self, tat: Nanos, cost: u64, now: Nanos) -> (Verdict, Nanos) {
        if cost > self.burst {
            return (
                Verdict::OverBurst {
                    cost,
                    burst: self.burst,
                },
                tat,
            );
        }
        if cost == 0 {
            // A free action neither needs nor changes the key's budget.
            return (Verdict::Allow, tat);
        }
        let now_cell = self.cell_at(now.0);
        let base = if tat <= now {
            now_cell
        } else {
            self.cell_at(tat.0).max(now_cell)
        };
        let next = base.saturating_add(cost);
        if next <= now_cell.saturating_add(self.burst) {
            return (Verdict::Allow, Nanos(self.cell_start(next)));
        }
        // Throttled means `base > now_cell`, i.e. the debt is older than this request
        // and does not move while time passes; the request fits once the current cell
        // reaches `next − burst`.
        let pass_at = self.cell_start(next - self.burst);
        let retry_after = Duration::from_nanos(pass_at.saturating_sub(now.0));
        (Verdict::Throttle { retry_after }, tat)
    }

    /// Decides one request and updates `tat` in place.
    pub fn check(&self, tat: &mut Nanos, cost: u64, now: Nanos) -> Verdict {
        let (verdict, next) = self.decide(*tat, cost, now);
        *tat = next;
        verdict
    }

    /// How many cells the key could spend right now.
    pub fn remaining(&self, tat: Nanos, now: Nanos) -> u64 {
        let now_cell = self.cell_at(now.0);
        let base = if tat <= now {
            now_cell
        } else {
            self.cell_at(tat.0).max(now_cell)
        };
        now_cell.saturating_add(self.burst).saturating_sub(base)
    }

    /// The cell that instant `t` falls in: `⌊t · count / per⌋`.
    fn cell_at(&self, t: u64) -> u64 {
        match self.whole_interval {
            Some(interval) => t / interval,
            None => {
                let cell = u128::from(t) * u128::from(self.count) / u128::from(self.per_ns);
                // `count ≤ per_ns`, so the cell number is at most `t` and fits.
                u64::try_from(cell).unwrap_or(u64::MAX)
            }
        }
    }

    /// The first nanosecond of cell `j`: `⌈j · per / count⌉`, saturating.
    fn cell_start(&self, j: u64) -> u64 {
        match self.whole_interval {
            Some(interval) => j.saturating_mul(interval),
            None => {
                let start =
                    (u128::from(j) * u128::from(self.per_ns)).div_ceil(u128::from(self.count));
                u64::try_from(start).unwrap_or(u64::MAX)
            }
        }
    }

    /// The same limit computed only through the `u128` path, to test that both paths agree.
    #[cfg(test)]
    pub(crate) fn without_fast_path(mut self) -> Self {
        self.whole_interval = None;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MS: u64 = 1_000_000;

    fn rate(count: u64, per_secs: u64) -> Rate {
        Rate {
            count,
            per: Duration::from_secs(per_secs),
        }
    }

    fn throttle(ns: u64) -> Verdict {
        Verdict::Throttle {
            retry_after: Duration::from_nanos(ns),
        }
    }

    /// One step of a scenario: at `at` ns, a request of `cost` cells, expecting `want`.
    struct Step {
        at: u64,
        cost: u64,
        want: Verdict,
    }

    fn step(at: u64, cost: u64, want: Verdict) -> Step {
        Step { at, cost, want }
    }

    #[test]
    fn scenarios() {
        use Verdict::Allow;
        let cases: Vec<(&str, Rate, u64, Vec<Step>)> = vec![
            (
                "burst then steady rate (10/s, burst 3)",
                rate(10, 1),
                3,
                vec![
                    step(0, 1, Allow),
                    step(0, 1, Allow),
                    step(0, 1, Allow),
                    step(0, 1, throttle(100 * MS)),
                    step(50 * MS, 1, throttle(50 * MS)),
                    step(100 * MS, 1, Allow),
                    step(100 * MS, 1, throttle(100 * MS)),
                    step(200 * MS, 1, Allow),
                    step(300 * MS, 1, Allow),
                ],
            ),
            (
                "retry_after exact at the boundary",
                rate(10, 1),
                1,
                vec![
                    step(7, 1, Allow),
                    step(7, 1, throttle(100 * MS - 7)),
                    step(100 * MS - 1, 1, throttle(1)),
                    step(100 * MS, 1, Allow),
                    step(100 * MS, 1, throttle(100 * MS)),
                ],
            ),
            (
                "cost above one spends several cells",
                rate(10, 1),
                5,
                vec![
                    step(0, 3, Allow),
                    step(0, 3, throttle(100 * MS)),
                    step(0, 2, Allow),
                    step(0, 1, throttle(100 * MS)),
                    step(250 * MS, 2, Allow),
                    step(250 * MS, 1, throttle(50 * MS)),
                ],
            ),
            (
                "cost above burst never passes, and charges nothing",
                rate(10, 1),
                2,
                vec![
                    step(0, 3, Verdict::OverBurst { cost: 3, burst: 2 }),
                    step(0, 2, Allow),
                    step(0, 3, Verdict::OverBurst { cost: 3, burst: 2 }),
                ],
            ),
            (
                "cost zero always passes, even in debt",
                rate(1, 1),
                1,
                vec![
                    step(0, 1, Allow),
                    step(0, 0, Allow),
                    step(0, 1, throttle(1_000 * MS)),
                ],
            ),
            (
                "an idle key is as good as new",
                rate(10, 1),
                2,
                vec![
                    step(0, 2, Allow),
                    step(10_000 * MS, 2, Allow),
                    step(10_000 * MS, 1, throttle(100 * MS)),
                ],
            ),
            (
                "a period that is not a whole number of nanoseconds (3/s)",
                rate(3, 1),
                1,
                vec![
                    step(0, 1, Allow),
                    step(0, 1, throttle(333_333_334)),
                    step(333_333_333, 1, throttle(1)),
                    step(333_333_334, 1, Allow),
                    step(333_333_334, 1, throttle(666_666_667 - 333_333_334)),
                    step(666_666_667, 1, Allow),
                    step(1_000_000_000, 1, Allow),
                    step(1_000_000_000, 1, throttle(333_333_334)),
                ],
            ),
            (
                "per minute (6000/min is 10 ms per cell)",
                rate(6000, 60),
                1,
                vec![
                    step(0, 1, Allow),
                    step(MS, 1, throttle(9 * MS)),
                    step(10 * MS, 1, Allow),
                ],
            ),
        ];
        for (name, rate, burst, steps) in cases {
            let gcra = Gcra::new(rate, burst).expect("valid test rule");
            for limit in [gcra, gcra.without_fast_path()] {
                let mut tat = Nanos::ZERO;
                for (i, s) in steps.iter().enumerate() {
                    let got = limit.check(&mut tat, s.cost, Nanos(s.at));
                    assert_eq!(
                        got, s.want,
                        "{name}: step {i} at {}ns cost {}",
                        s.at, s.cost
                    );
                }
            }
        }
    }

    #[test]
    fn rejects_rules_it_cannot_honour() {
        assert_eq!(Gcra::new(rate(0, 1), 1), Err(GcraError::ZeroCount));
        assert_eq!(Gcra::new(rate(1, 1), 0), Err(GcraError::ZeroBurst));
        assert!(matches!(
            Gcra::new(rate(2_000_000_000, 1), 1),
            Err(GcraError::TooFast {
                count: 2_000_000_000,
                ..
            })
        ));
        assert!(matches!(
            Gcra::new(rate(1, 3600), u64::MAX),
            Err(GcraError::BurstTooLong { .. })
        ));
        assert!(Gcra::new(rate(1_000_000_000, 1), 1).is_ok());
    }

    #[test]
    fn remaining_counts_the_cells_left() {
        let gcra = Gcra::new(rate(10, 1), 4).expect("valid");
        let mut tat = Nanos::ZERO;
        assert_eq!(gcra.remaining(tat, Nanos(0)), 4);
        assert!(gcra.check(&mut tat, 3, Nanos(0)).is_allow());
        assert_eq!(gcra.remaining(tat, Nanos(0)), 1);
        assert_eq!(gcra.remaining(tat, Nanos(200 * MS)), 3);
        assert_eq!(gcra.remaining(tat, Nanos(u64::MAX / 2)), 4);
    }

    proptest! {
        /// The `u64` path for whole intervals and the general `u128` path agree.
        #[test]
        fn fast_path_matches_general_path(
            count in prop::sample::select(vec![1u64, 2, 4, 5, 8, 10, 100, 1000, 1_000_000]),
            per in prop::sample::select(vec![1u64, 60, 3600]),
            burst in 1u64..50,
            ops in prop::collection::vec((0u64..200 * MS, 0u64..60), 1..60),
        ) {
            let fast = Gcra::new(rate(count, per), burst).expect("valid");
            prop_assert!(fast.whole_interval.is_some());
            let slow = fast.without_fast_path();
            let (mut a, mut b) = (Nanos::ZERO, Nanos::ZERO);
            let mut now = 0u64;
            for (advance, cost) in ops {
                now += advance;
                prop_assert_eq!(fast.check(&mut a, cost, Nanos(now)), slow.check(&mut b, cost, Nanos(now)));
                prop_assert_eq!(a, b);
            }
        }
    }
}
