//! What a load run measured: per-second rows and overall totals of sent, answered and
//! failed decisions, outcome counts and latency histograms; the summary computed
//! from them, the per-second CSV, and the service-level gates that set the exit code.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use dynscale_core::certify::{StepResult, fmt_us};
use hdrhistogram::Histogram;
use serde::Serialize;

/// Latencies are recorded in microseconds up to an hour, three significant digits.
const MAX_LATENCY_US: u64 = 3_600_000_000;

/// A decision's outcome as counted by the generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Allow,
    Warn,
    Deny,
    Throttle,
    Quarantine,
    Escalate,
    /// An outcome this generator does not know.
    Other,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Allow,
        Outcome::Warn,
        Outcome::Deny,
        Outcome::Throttle,
        Outcome::Quarantine,
        Outcome::Escalate,
        Outcome::Other,
    ];

    pub fn parse(text: &str) -> Self {
        match text {
            "allow" => Outcome::Allow,
            "warn" => Outcome::Warn,
            "deny" => Outcome::Deny,
            "throttle" => Outcome::Throttle,
            "quarantine" => Outcome::Quarantine,
            "escalate" => Outcome::Escalate,
            _ => Outcome::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Allow => "allow",
            Outcome::Warn => "warn",
            Outcome::Deny => "deny",
            Outcome::Throttle => "throttle",
            Outcome::Quarantine => "quarantine",
            Outcome::Escalate => "escalate",
            Outcome::Other => "other",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Counts of each outcome, in [`Outcome::ALL`] order.
pub type OutcomeCounts = [u64; 7];

fn histogram() -> Histogram<u64> {
    // The bounds are constants that hdrhistogram accepts.
    #[allow(clippy::expect_used)]
    Histogram::new_with_bounds(1, MAX_LATENCY_US, 3).expect("valid histogram bounds")
}

fn record_latency(h: &mut Histogram<u64>, latency: Duration) {
    let us = u64::try_from(latency.as_micros())
        .unwrap_or(MAX_LATENCY_US)
        .clamp(1, MAX_LATENCY_US);
    h.saturating_record(us);
}

/// One second of the schedule (requests are counted in the second they were due).
#[derive(Debug, Clone)]
pub struct Second {
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    pub outcomes: OutcomeCounts,
    latency: Histogram<u64>,
}

impl Second {
    fn new() -> Self {
        Self {
            sent: 0,
            answered: 0,
            errors: 0,
            outcomes: [0; 7],
            latency: histogram(),
        }
    }
}

/// The result of one HTTP request of the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The node answered; one outcome per decision, and how many batch items failed.
    Decided {
        outcomes: Vec<Outcome>,
        item_errors: u64,
    },
    /// The request failed as a whole (`kind` says how: `status 503`, `timeout`, ...);
    /// every decision in it counts as an error.
    Failed { kind: String },
}

/// Everything one run measured.
#[derive(Debug, Clone)]
pub struct Recorder {
    seconds: Vec<Second>,
    total: Histogram<u64>,
    /// Latency of the requests answered with decisions (not shed or failed).
    decided: Histogram<u64>,
    /// Decisions that were due but not sent before the run's hard deadline.
    pub unsent: u64,
    pub error_kinds: BTreeMap<String, u64>,
}

impl Recorder {
    /// A recorder for a run of `seconds` seconds.
    pub fn new(seconds: usize) -> Self {
        Self {
            seconds: (0..seconds.max(1)).map(|_| Second::new()).collect(),
            total: histogram(),
            decided: histogram(),
            unsent: 0,
            error_kinds: BTreeMap::new(),
        }
    }

    /// Records one HTTP request of `decisions` decisions due in `second`, answered
    /// `latency` after it was due.
    pub fn record(&mut self, second: usize, decisions: u64, latency: Duration, answer: &Answer) {
        let last = self.seconds.len() - 1;
        let row = &mut self.seconds[second.min(last)];
        row.sent += decisions;
        record_latency(&mut row.latency, latency);
        record_latency(&mut self.total, latency);
        match answer {
            Answer::Decided {
                outcomes,
                item_errors,
            } => {
                record_latency(&mut self.decided, latency);
                row.answered += outcomes.len() as u64;
                row.errors += item_errors;
                for o in outcomes {
                    row.outcomes[o.index()] += 1;
                }
                if *item_errors > 0 {
                    *self
                        .error_kinds
                        .entry("batch item error".into())
                        .or_default() += item_errors;
                }
            }
            Answer::Failed { kind } => {
                row.errors += decisions;
                *self.error_kinds.entry(kind.clone()).or_default() += decisions;
            }
        }
    }

    /// Totals so far: sent, answered, errors.
    pub fn totals(&self) -> (u64, u64, u64) {
        self.seconds.iter().fold((0, 0, 0), |(s, a, e), r| {
            (s + r.sent, a + r.answered, e + r.errors)
        })
    }

    /// The p99 so far, microseconds.
    pub fn p99_us(&self) -> u64 {
        self.total.value_at_quantile(0.99)
    }

    /// The per-second CSV: a header, then one row per second of the schedule.
    pub fn csv(&self) -> String {
        let mut out = String::from("second,sent,answered,errors");
        for o in Outcome::ALL {
            out.push(',');
            out.push_str(o.as_str());
        }
        out.push_str(",p50_us,p99_us\n");
        for (i, r) in self.seconds.iter().enumerate() {
            let _ = write!(out, "{i},{},{},{}", r.sent, r.answered, r.errors);
            for n in r.outcomes {
                let _ = write!(out, ",{n}");
            }
            let (p50, p99) = if r.sent == 0 {
                (0, 0)
            } else {
                (
                    r.latency.value_at_quantile(0.5),
                    r.latency.value_at_quantile(0.99),
                )
            };
            let _ = writeln!(out, ",{p50},{p99}");
        }
        out
    }

    /// The summary of the run; `elapsed` is the time from the first due request to
    /// the last answer, `target_rps` the offered rate.
    pub fn summary(&self, target_rps: f64, elapsed: Duration) -> Summary {
        let (sent, answered, errors) = self.totals();
        let mut outcomes: OutcomeCounts = [0; 7];
        for r in &self.seconds {
            for (total, n) in outcomes.iter_mut().zip(r.outcomes) {
                *total += n;
            }
        }
        let scheduled = sent + self.unsent;
        let secs = elapsed.as_secs_f64().max(1e-9);
        let q = |q: f64| {
            if sent == 0 {
                0
            } else {
                self.total.value_at_quantile(q)
            }
        };
        Summary {
            target_rps,
            achieved_rps: answered as f64 / secs,
            elapsed_ms: u64::try_from(elapsed.as_millis()).unwrap_or(u64::MAX),
            scheduled,
            sent,
            answered,
            errors,
            unsent: self.unsent,
            error_rate: if scheduled == 0 {
                0.0
            } else {
                (errors + self.unsent) as f64 / scheduled as f64
            },
            outcomes: Outcome::ALL
                .iter()
                .map(|o| (o.as_str().to_owned(), outcomes[o.index()]))
                .collect(),
            error_kinds: self.error_kinds.clone(),
            p50_us: q(0.5),
            p95_us: q(0.95),
            p99_us: q(0.99),
            p999_us: q(0.999),
            max_us: if sent == 0 { 0 } else { self.total.max() },
            admitted_p50_us: self.decided.value_at_quantile(0.5),
            admitted_p99_us: self.decided.value_at_quantile(0.99),
            admitted_max_us: self.decided.max(),
        }
    }
}

/// The figures of a run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Summary {
    pub target_rps: f64,
    pub achieved_rps: f64,
    pub elapsed_ms: u64,
    /// Decisions due in the run (`sent + unsent`).
    pub scheduled: u64,
    /// Decisions sent (`answered + errors`).
    pub sent: u64,
    pub answered: u64,
    pub errors: u64,
    /// Decisions due but never sent: the generator could not keep the schedule.
    pub unsent: u64,
    /// `(errors + unsent) / scheduled`.
    pub error_rate: f64,
    pub outcomes: BTreeMap<String, u64>,
    pub error_kinds: BTreeMap<String, u64>,
    /// Latency from the intended send time, microseconds.
    pub p50_us: u64,
    pub p95_us: u64,
    pub p99_us: u64,
    pub p999_us: u64,
    pub max_us: u64,
    /// Latency of the requests answered with decisions only, leaving out those shed
    /// (429) or failed: what admitted traffic saw under overload.
    pub admitted_p50_us: u64,
    pub admitted_p99_us: u64,
    pub admitted_max_us: u64,
}

impl Summary {
    /// The summary as a step of a scale report.
    pub fn step(&self) -> StepResult {
        StepResult {
            target_rps: self.target_rps,
            achieved_rps: self.achieved_rps,
            duration_ms: self.elapsed_ms,
            scheduled: self.scheduled,
            sent: self.sent,
            answered: self.answered,
            errors: self.errors,
            error_rate: self.error_rate,
            p50_us: self.p50_us,
            p95_us: self.p95_us,
            p99_us: self.p99_us,
            p999_us: self.p999_us,
            max_us: self.max_us,
        }
    }

    /// The summary for people.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "rate:      {:.0} decisions/s answered (offered {:.0}/s) over {:.1}s",
            self.achieved_rps,
            self.target_rps,
            self.elapsed_ms as f64 / 1e3
        );
        let _ = writeln!(
            out,
            "decisions: {} scheduled, {} sent, {} answered, {} errors, {} unsent",
            self.scheduled, self.sent, self.answered, self.errors, self.unsent
        );
        let _ = writeln!(out, "error rate: {:.3} %", self.error_rate * 100.0);
        let _ = writeln!(
            out,
            "latency:   p50 {}  p95 {}  p99 {}  p99.9 {}  max {} (from the intended send time)",
            fmt_us(self.p50_us),
            fmt_us(self.p95_us),
            fmt_us(self.p99_us),
            fmt_us(self.p999_us),
            fmt_us(self.max_us)
        );
        if self.errors > 0 {
            let _ = writeln!(
                out,
                "admitted:  p50 {}  p99 {}  max {} (requests answered with decisions)",
                fmt_us(self.admitted_p50_us),
                fmt_us(self.admitted_p99_us),
                fmt_us(self.admitted_max_us)
            );
        }
        let outcomes: Vec<String> = Outcome::ALL
            .iter()
            .map(|o| {
                format!(
                    "{} {}",
                    o.as_str(),
                    self.outcomes.get(o.as_str()).copied().unwrap_or(0)
                )
            })
            .collect();
        let _ = writeln!(out, "outcomes:  {}", outcomes.join(", "));
        if !self.error_kinds.is_empty() {
            let kinds: Vec<String> = self
                .error_kinds
                .iter()
                .map(|(k, n)| format!("{k} ×{n}"))
                .collect();
            let _ = writeln!(out, "errors:    {}", kinds.join(", "));
        }
        out
    }
}

/// The service-level gates of a run (`--slo-p99`, `--max-error-rate`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gates {
    pub p99: Option<Duration>,
    pub max_error_rate: Option<f64>,
}

/// Every gate the summary misses, each as a sentence naming its flag.
pub fn unmet_gates(summary: &Summary, gates: &Gates) -> Vec<String> {
    let mut unmet = Vec::new();
    if let Some(limit) = gates.p99 {
        let limit_us = u64::try_from(limit.as_micros()).unwrap_or(u64::MAX);
        if summary.p99_us > limit_us {
            unmet.push(format!(
                "--slo-p99: p99 latency {} is above {}",
                fmt_us(summary.p99_us),
                fmt_us(limit_us)
            ));
        }
    }
    if let Some(max) = gates.max_error_rate
        && summary.error_rate > max
    {
        unmet.push(format!(
            "--max-error-rate: error rate {:.3} % is above {:.3} %",
            summary.error_rate * 100.0,
            max * 100.0
        ));
    }
    if summary.sent == 0 {
        unmet.push("nothing was sent".into());
    }
    unmet
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decided(outcomes: &[Outcome]) -> Answer {
        Answer::Decided {
            outcomes: outcomes.to_vec(),
            item_errors: 0,
        }
    }

    fn sample() -> Recorder {
        let mut r = Recorder::new(3);
        let ms = Duration::from_millis;
        r.record(0, 1, ms(1), &decided(&[Outcome::Allow]));
        r.record(0, 1, ms(2), &decided(&[Outcome::Deny]));
        r.record(
            1,
            3,
            ms(3),
            &Answer::Decided {
                outcomes: vec![Outcome::Warn, Outcome::Escalate],
                item_errors: 1,
            },
        );
        r.record(
            2,
            2,
            ms(400),
            &Answer::Failed {
                kind: "status 503".into(),
            },
        );
        // Late requests still land in the last row.
        r.record(9, 1, ms(5), &decided(&[Outcome::parse("throttle")]));
        r.unsent = 2;
        r
    }

    #[test]
    fn the_summary_adds_up() {
        let s = sample().summary(4.0, Duration::from_secs(2));
        assert_eq!((s.sent, s.answered, s.errors, s.unsent), (8, 5, 3, 2));
        assert_eq!(s.sent, s.answered + s.errors);
        assert_eq!(s.scheduled, 10);
        assert!((s.error_rate - 0.5).abs() < 1e-9);
        assert!((s.achieved_rps - 2.5).abs() < 1e-9);
        assert_eq!(s.outcomes["allow"], 1);
        assert_eq!(s.outcomes["throttle"], 1);
        assert_eq!(s.outcomes.values().sum::<u64>(), s.answered);
        assert_eq!(s.error_kinds["status 503"], 2);
        assert_eq!(s.error_kinds["batch item error"], 1);
        assert!(s.p50_us >= 2_990 && s.p50_us <= 3_010, "{}", s.p50_us);
        assert!(s.max_us >= 399_000, "{}", s.max_us);
        assert!(s.render().contains("warn 1"), "{}", s.render());
        // The failed request (400 ms) is left out of the admitted latency.
        assert!(
            s.admitted_max_us >= 4_990 && s.admitted_max_us <= 5_010,
            "{}",
            s.admitted_max_us
        );
        assert!(s.render().contains("admitted:"), "{}", s.render());
    }

    #[test]
    fn the_csv_has_one_row_per_second() {
        let csv = sample().csv();
        let lines: Vec<&str> = csv.lines().collect();
        assert_eq!(
            lines[0],
            "second,sent,answered,errors,allow,warn,deny,throttle,quarantine,escalate,other,p50_us,p99_us"
        );
        assert_eq!(lines.len(), 4);
        assert!(
            lines[1].starts_with("0,2,2,0,1,0,1,0,0,0,0,"),
            "{}",
            lines[1]
        );
        assert!(lines[3].starts_with("2,3,1,2,0,0,0,1,"), "{}", lines[3]);
    }

    #[test]
    fn gates_name_their_flag() {
        let s = sample().summary(4.0, Duration::from_secs(2));
        let strict = Gates {
            p99: Some(Duration::from_micros(1)),
            max_error_rate: Some(0.001),
        };
        let unmet = unmet_gates(&s, &strict);
        assert_eq!(unmet.len(), 2, "{unmet:?}");
        assert!(unmet[0].starts_with("--slo-p99"));
        assert!(unmet[1].starts_with("--max-error-rate"));
        let generous = Gates {
            p99: Some(Duration::from_secs(10)),
            max_error_rate: Some(0.9),
        };
        assert!(unmet_gates(&s, &generous).is_empty());
        let empty = Recorder::new(1).summary(1.0, Duration::from_secs(1));
        assert_eq!(
            unmet_gates(&empty, &generous),
            vec!["nothing was sent".to_owned()]
        );
    }
}
