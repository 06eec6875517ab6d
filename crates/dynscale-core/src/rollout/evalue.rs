//! Anytime-valid evidence that a candidate's rate is above a control's: the
//! two-sample Beta-Binomial mixture e-value.
//!
//! For binary observations (an error, a failure, a deny, a slow action) of two arms
//! with `k₁` events in `n₁` trials (candidate) and `k₂` in `n₂` (control):
//!
//! ```text
//!        B(a+k₁, b+n₁−k₁) · B(a+k₂, b+n₂−k₂) / B(a, b)²
//! E  =  ───────────────────────────────────────────────
//!            sup over the null of  L(p₁) · L(p₂)
//! ```
//!
//! The numerator is the likelihood of the data under independent `Beta(a, b)` priors
//! on both rates (a mixture of likelihoods); the denominator is the largest
//! likelihood any null hypothesis gives the data. For every null `(p₁, p₂)`, `E` is
//! therefore at most the mixture likelihood ratio against that null, which is a
//! nonnegative martingale with mean 1 whatever the allocation between the arms and
//! however often one looks. Ville's inequality gives `P(sup E ≥ 1/α) ≤ α`: a
//! rollout may check after every batch and stop at the first crossing without
//! inflating the false-rollback rate.
//!
//! Nulls: [`Alternative::Greater`] tests `p₁ ≤ p₂` (the candidate is no worse). Its
//! supremum is the pooled rate when the candidate's observed rate is higher and the
//! unconstrained maximum otherwise (then `E ≤ 1`). [`Alternative::TwoSided`] tests
//! `p₁ = p₂` (pooled rate always).
//!
//! Evidence from successive windows (rollout steps, in which the null rates may
//! differ) multiplies: each window's `E` is bounded by a martingale started at the
//! window's beginning, and their concatenation is again one.

use serde::{Deserialize, Serialize};

/// Events out of trials for one arm.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    pub events: u64,
    pub trials: u64,
}

impl Counts {
    /// Counts; `events` is clamped to `trials`.
    pub fn new(events: u64, trials: u64) -> Self {
        Self {
            events: events.min(trials),
            trials,
        }
    }

    /// The observed rate, if there was a trial.
    pub fn rate(self) -> Option<f64> {
        (self.trials > 0).then(|| self.events as f64 / self.trials as f64)
    }

    /// These counts minus `base` (saturating), for a window that began at `base`.
    pub fn since(self, base: Counts) -> Counts {
        Counts::new(
            self.events.saturating_sub(base.events),
            self.trials.saturating_sub(base.trials),
        )
    }

    fn merge(self, o: Counts) -> Counts {
        Counts::new(self.events + o.events, self.trials + o.trials)
    }
}

/// Which difference counts as evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Alternative {
    /// The candidate's rate is above the control's.
    Greater,
    /// The rates differ, in either direction.
    TwoSided,
}

/// The shape of the Beta prior on each arm's rate. `Beta(1, 1)` (uniform) is the
/// default; every prior gives a valid test, a good one gives more power.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BetaPrior {
    pub a: f64,
    pub b: f64,
}

impl Default for BetaPrior {
    fn default() -> Self {
        Self { a: 1.0, b: 1.0 }
    }
}

/// `ln E` for the counts (see the module docs).
pub fn ln_e_value(
    candidate: Counts,
    control: Counts,
    alternative: Alternative,
    prior: BetaPrior,
) -> f64 {
    let mixture = ln_marginal(candidate, prior) + ln_marginal(control, prior);
    let candidate_not_worse = match (candidate.rate(), control.rate()) {
        (Some(c), Some(k)) => c <= k,
        _ => true,
    };
    let null_max = match alternative {
        Alternative::Greater if candidate_not_worse => {
            ln_max_likelihood(candidate) + ln_max_likelihood(control)
        }
        _ => ln_max_likelihood(candidate.merge(control)),
    };
    mixture - null_max
}

/// `ln E` of the sequential sign test on paired observations: `counts.events` of
/// `counts.trials` discordant pairs went the candidate's (worse) way. The null is
/// `q ≤ ½` ([`Alternative::Greater`]) or `q = ½`; the mixture is `Beta(a, b)` on `q`.
pub fn ln_e_value_paired(counts: Counts, alternative: Alternative, prior: BetaPrior) -> f64 {
    let mixture = ln_marginal(counts, prior);
    let not_worse = counts.rate().is_none_or(|q| q <= 0.5);
    let null_max = match alternative {
        Alternative::Greater if not_worse => ln_max_likelihood(counts),
        _ => counts.trials as f64 * 0.5f64.ln(),
    };
    mixture - null_max
}

/// `ln ∫ pᵏ (1−p)ⁿ⁻ᵏ Beta(p; a, b) dp`.
fn ln_marginal(c: Counts, prior: BetaPrior) -> f64 {
    let (k, n) = (c.events as f64, c.trials as f64);
    ln_beta(prior.a + k, prior.b + n - k) - ln_beta(prior.a, prior.b)
}

/// `ln sup_p pᵏ (1−p)ⁿ⁻ᵏ`, with `0 · ln 0 = 0`.
fn ln_max_likelihood(c: Counts) -> f64 {
    let (k, n) = (c.events as f64, c.trials as f64);
    let term = |x: f64| if x > 0.0 { x * (x / n).ln() } else { 0.0 };
    term(k) + term(n - k)
}

/// `ln B(a, b)` for positive arguments.
pub fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// `ln Γ(x)` for `x > 0`: the Lanczos approximation (g = 7, 9 terms), relative
/// error around 1e-15, with the reflection formula below 0.5.
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const COEF: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut sum = COEF[0];
    for (i, c) in COEF.iter().enumerate().skip(1) {
        sum += c / (x + i as f64);
    }
    let t = x + G + 0.5;
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + sum.ln()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol * b.abs().max(1.0)
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        // Γ(n) = (n−1)!
        let mut fact = 1.0f64;
        for n in 1..30u32 {
            assert!(close(ln_gamma(f64::from(n)), fact.ln(), 1e-13), "n = {n}");
            fact *= f64::from(n);
        }
        assert!(close(
            ln_gamma(0.5),
            std::f64::consts::PI.sqrt().ln(),
            1e-13
        ));
        // ln Γ(1e6) from Stirling's series.
        let x = 1e6f64;
        let stirling =
            (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln() + 1.0 / (12.0 * x);
        assert!(close(ln_gamma(x), stirling, 1e-14));
    }

    #[test]
    fn no_data_and_equal_rates_give_no_evidence() {
        let p = BetaPrior::default();
        let zero = Counts::default();
        assert_eq!(ln_e_value(zero, zero, Alternative::Greater, p), 0.0);
        let e = ln_e_value(
            Counts::new(50, 1000),
            Counts::new(1000, 20_000),
            Alternative::Greater,
            p,
        );
        assert!(e < 0.0, "{e}");
        // The candidate looks better: a one-sided test finds no evidence at all.
        let better = ln_e_value(
            Counts::new(10, 1000),
            Counts::new(1000, 20_000),
            Alternative::Greater,
            p,
        );
        assert!(better < 0.0);
        let two = ln_e_value(
            Counts::new(10, 1000),
            Counts::new(1000, 20_000),
            Alternative::TwoSided,
            p,
        );
        assert!(two > 5.0, "{two}");
    }

    #[test]
    fn a_clear_regression_gives_strong_evidence() {
        let e = ln_e_value(
            Counts::new(150, 1000),
            Counts::new(1000, 20_000),
            Alternative::Greater,
            BetaPrior::default(),
        );
        assert!(e > 20.0, "{e}");
    }

    #[test]
    fn paired_sign_test() {
        let p = BetaPrior::default();
        assert_eq!(
            ln_e_value_paired(Counts::default(), Alternative::Greater, p),
            0.0
        );
        assert!(ln_e_value_paired(Counts::new(10, 30), Alternative::Greater, p) < 0.0);
        // All 20 discordant pairs one way: 2²⁰ / 21.
        let e = ln_e_value_paired(Counts::new(20, 20), Alternative::Greater, p);
        assert!(close(e, 20.0 * 2f64.ln() - 21f64.ln(), 1e-12), "{e}");
    }

    #[test]
    fn e_value_has_mean_at_most_one_under_the_null() {
        // Exact expectation by enumeration for small n: Σ P(k₁) P(k₂) E(k₁, k₂) ≤ 1.
        let p = 0.3f64;
        let (n1, n2) = (12u64, 20u64);
        let binom = |n: u64, k: u64| {
            (ln_gamma(n as f64 + 1.0) - ln_gamma(k as f64 + 1.0) - ln_gamma((n - k) as f64 + 1.0)
                + k as f64 * p.ln()
                + (n - k) as f64 * (1.0 - p).ln())
            .exp()
        };
        for alt in [Alternative::Greater, Alternative::TwoSided] {
            let mut mean = 0.0;
            for k1 in 0..=n1 {
                for k2 in 0..=n2 {
                    let e = ln_e_value(
                        Counts::new(k1, n1),
                        Counts::new(k2, n2),
                        alt,
                        BetaPrior::default(),
                    )
                    .exp();
                    mean += binom(n1, k1) * binom(n2, k2) * e;
                }
            }
            assert!(mean <= 1.0, "{alt:?}: {mean}");
        }
    }
}
