//! `ScaleConfig`: the `[scale]` table of the node's TOML file, with defaults that
//! work with no table at all, and [`ScaleConfig::validate`], whose errors name the
//! field at fault.
//!
//! ```toml
//! [scale]
//! evaluate_every = "10s"
//! bucket = "10s"
//! level_window = "1m"
//! long_window = "5m"
//!
//! [scale.levels]
//! latency_p99_ms = { yellow = 100, orange = 200, red = 500 }
//!
//! [scale.slo]
//! latency_objective_ms = 100
//! target = 0.999
//!
//! [[scale.rules]]
//! name = "storage-red"
//! when = { signal = "storage", level = "red" }
//! for = "1m"
//! keep_firing_for = "5m"
//! level = "red"
//! owner = "storage-oncall"
//! respond_within = "1h"
//! repeat_every = "15m"
//! ```
//!
//! Writing `[[scale.rules]]` replaces the default rules ([`default_rules`]) whole.

use std::collections::HashMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::alert::{AlertRule, Condition, Route};
use super::anomaly::AnomalyConfig;
use super::burn::BurnTier;
use super::forecast::ForecastConfig;
use super::signal::{Level, LevelThresholds, Signal};
use crate::document::HumanDuration;

/// Serde for a `Duration` written as `500ms`, `30s`, `5m` or `2h`.
pub(crate) mod human_duration {
    use super::HumanDuration;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};
    use std::time::Duration;

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        HumanDuration(*d).serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        HumanDuration::deserialize(d).map(|h| h.0)
    }
}

/// Scale monitoring and alerting settings (`[scale]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ScaleConfig {
    /// How often the server evaluates levels and alerts; also the interval of the
    /// per-pack deny-rate anomaly detector.
    #[serde(with = "human_duration")]
    pub evaluate_every: Duration,
    /// Length of one latency sketch in the sliding windows.
    #[serde(with = "human_duration")]
    pub bucket: Duration,
    /// The window of the latency p99 and throughput levels.
    #[serde(with = "human_duration")]
    pub level_window: Duration,
    /// The longer latency window reported in status (and kept in memory).
    #[serde(with = "human_duration")]
    pub long_window: Duration,
    pub levels: LevelThresholds,
    pub slo: SloConfig,
    pub forecast: ForecastConfig,
    pub anomaly: AnomalyConfig,
    pub rules: Vec<RuleConfig>,
}

impl Default for ScaleConfig {
    fn default() -> Self {
        ScaleConfig {
            evaluate_every: Duration::from_secs(10),
            bucket: Duration::from_secs(10),
            level_window: Duration::from_secs(60),
            long_window: Duration::from_secs(300),
            levels: LevelThresholds::default(),
            slo: SloConfig::default(),
            forecast: ForecastConfig::default(),
            anomaly: AnomalyConfig::default(),
            rules: default_rules(),
        }
    }
}

/// The decision SLO and its burn-rate tiers (`[scale.slo]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloConfig {
    /// A decision slower than this is bad.
    pub latency_objective_ms: f64,
    /// Share of good decisions promised, e.g. 0.999.
    pub target: f64,
    /// Length of one good/bad counter interval.
    #[serde(with = "human_duration")]
    pub bucket: Duration,
    /// A tier fires only when its short window holds at least this many decisions.
    pub min_events: u64,
    pub page: BurnTierConfig,
    pub ticket: BurnTierConfig,
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            latency_objective_ms: 100.0,
            target: 0.999,
            bucket: Duration::from_secs(60),
            min_events: 10,
            page: BurnTierConfig {
                factor: 14.4,
                long_window: Duration::from_secs(3600),
                short_window: Duration::from_secs(300),
            },
            ticket: BurnTierConfig {
                factor: 6.0,
                long_window: Duration::from_secs(6 * 3600),
                short_window: Duration::from_secs(1800),
            },
        }
    }
}

impl SloConfig {
    /// The settings of `tier`.
    pub fn tier(&self, tier: BurnTier) -> &BurnTierConfig {
        match tier {
            BurnTier::Page => &self.page,
            BurnTier::Ticket => &self.ticket,
        }
    }

    /// The latency objective as a duration.
    pub fn latency_objective(&self) -> Duration {
        Duration::from_secs_f64(self.latency_objective_ms.max(0.0) / 1000.0)
    }
}

/// One burn-rate tier: the factor both windows must reach.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BurnTierConfig {
    pub factor: f64,
    #[serde(with = "human_duration")]
    pub long_window: Duration,
    #[serde(with = "human_duration")]
    pub short_window: Duration,
}

/// One alert rule as written in `[[scale.rules]]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleConfig {
    pub name: String,
    pub when: WhenConfig,
    #[serde(rename = "for", default = "zero", with = "human_duration")]
    pub for_: Duration,
    #[serde(default = "zero", with = "human_duration")]
    pub keep_firing_for: Duration,
    pub level: Level,
    pub owner: String,
    #[serde(with = "human_duration")]
    pub respond_within: Duration,
    #[serde(default)]
    pub repeat_every: Option<HumanDuration>,
}

fn zero() -> Duration {
    Duration::ZERO
}

/// A rule's condition: exactly one of `signal` with one of `level` / `above` /
/// `below`; `burn_rate = "page" | "ticket"`; `storage_forecast = true`;
/// `deny_rate_anomaly = true`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WhenConfig {
    pub signal: Option<Signal>,
    pub level: Option<Level>,
    pub above: Option<f64>,
    pub below: Option<f64>,
    pub burn_rate: Option<BurnTier>,
    pub storage_forecast: bool,
    pub deny_rate_anomaly: bool,
}

/// Why a `[scale]` table is refused. `field` is the dotted path below `scale`.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum ScaleConfigError {
    #[error(
        "scale.{field}: thresholds must {order} from yellow to red (yellow {yellow}, orange {orange}, red {red})"
    )]
    ThresholdOrder {
        field: String,
        order: &'static str,
        yellow: f64,
        orange: f64,
        red: f64,
    },
    #[error("scale.{field}: {value} is out of range, expected {expected}")]
    OutOfRange {
        field: String,
        value: f64,
        expected: &'static str,
    },
    #[error("scale.{field}: must be greater than zero")]
    Zero { field: String },
    #[error("scale.{field} ({value:?}) must be at least scale.{other} ({other_value:?})")]
    Shorter {
        field: String,
        value: Duration,
        other: String,
        other_value: Duration,
    },
    #[error("scale.rules[{index}].name: `{name}` is also the name of rules[{first}]")]
    DuplicateRule {
        index: usize,
        name: String,
        first: usize,
    },
    #[error("scale.rules[{index}].name: `{name}` must be 1-64 characters of a-z, 0-9, `-` and `_`")]
    BadRuleName { index: usize, name: String },
    #[error("scale.rules[{index}].when: {problem}")]
    BadCondition { index: usize, problem: &'static str },
    #[error("scale.rules[{index}].owner: must not be empty")]
    NoOwner { index: usize },
}

type Result<T> = std::result::Result<T, ScaleConfigError>;

fn positive(field: &str, d: Duration) -> Result<()> {
    if d.is_zero() {
        return Err(ScaleConfigError::Zero {
            field: field.into(),
        });
    }
    Ok(())
}

fn at_least(field: &str, d: Duration, other: &str, o: Duration) -> Result<()> {
    if d < o {
        return Err(ScaleConfigError::Shorter {
            field: field.into(),
            value: d,
            other: other.into(),
            other_value: o,
        });
    }
    Ok(())
}

fn in_range(field: &str, v: f64, ok: bool, expected: &'static str) -> Result<()> {
    if !ok || !v.is_finite() {
        return Err(ScaleConfigError::OutOfRange {
            field: field.into(),
            value: v,
            expected,
        });
    }
    Ok(())
}

impl ScaleConfig {
    /// Checks every setting; the first fault is returned, naming its field.
    pub fn validate(&self) -> Result<()> {
        positive("evaluate_every", self.evaluate_every)?;
        positive("bucket", self.bucket)?;
        at_least("level_window", self.level_window, "bucket", self.bucket)?;
        at_least(
            "long_window",
            self.long_window,
            "level_window",
            self.level_window,
        )?;
        for signal in Signal::ALL {
            let t = self.levels.of(signal);
            let field = format!("levels.{}", level_field(signal));
            for (name, v) in [("yellow", t.yellow), ("orange", t.orange), ("red", t.red)] {
                in_range(
                    &format!("{field}.{name}"),
                    v,
                    v >= 0.0,
                    "a finite number ≥ 0",
                )?;
            }
            let ordered = if signal.higher_is_worse() {
                t.yellow < t.orange && t.orange < t.red
            } else {
                t.yellow > t.orange && t.orange > t.red
            };
            if !ordered {
                return Err(ScaleConfigError::ThresholdOrder {
                    field,
                    order: if signal.higher_is_worse() {
                        "increase"
                    } else {
                        "decrease"
                    },
                    yellow: t.yellow,
                    orange: t.orange,
                    red: t.red,
                });
            }
        }
        self.validate_slo()?;
        self.validate_forecast()?;
        self.validate_anomaly()?;
        self.rules()?;
        Ok(())
    }

    fn validate_slo(&self) -> Result<()> {
        let slo = &self.slo;
        in_range(
            "slo.latency_objective_ms",
            slo.latency_objective_ms,
            slo.latency_objective_ms > 0.0,
            "a number of milliseconds > 0",
        )?;
        in_range(
            "slo.target",
            slo.target,
            slo.target > 0.0 && slo.target < 1.0,
            "a share strictly between 0 and 1, e.g. 0.999",
        )?;
        positive("slo.bucket", slo.bucket)?;
        for tier in BurnTier::ALL {
            let t = slo.tier(tier);
            let name = tier.as_str();
            in_range(
                &format!("slo.{name}.factor"),
                t.factor,
                t.factor > 0.0,
                "a number > 0",
            )?;
            at_least(
                &format!("slo.{name}.short_window"),
                t.short_window,
                "slo.bucket",
                slo.bucket,
            )?;
            at_least(
                &format!("slo.{name}.long_window"),
                t.long_window,
                &format!("slo.{name}.short_window"),
                t.short_window,
            )?;
        }
        Ok(())
    }

    fn validate_forecast(&self) -> Result<()> {
        let f = &self.forecast;
        positive("forecast.sample_every", f.sample_every)?;
        at_least(
            "forecast.window",
            f.window,
            "forecast.sample_every",
            f.sample_every,
        )?;
        positive("forecast.horizon", f.horizon)?;
        in_range(
            "forecast.min_samples",
            f.min_samples as f64,
            f.min_samples >= 2,
            "at least 2",
        )
    }

    fn validate_anomaly(&self) -> Result<()> {
        let a = &self.anomaly;
        in_range(
            "anomaly.alpha",
            a.alpha,
            a.alpha > 0.0 && a.alpha <= 1.0,
            "0 < alpha ≤ 1",
        )?;
        in_range(
            "anomaly.z_threshold",
            a.z_threshold,
            a.z_threshold > 0.0,
            "a number > 0",
        )?;
        in_range(
            "anomaly.min_stddev",
            a.min_stddev,
            a.min_stddev > 0.0 && a.min_stddev <= 1.0,
            "a deny-rate fraction in (0, 1]",
        )?;
        in_range(
            "anomaly.max_packs",
            a.max_packs as f64,
            a.max_packs >= 1,
            "at least 1",
        )?;
        positive("anomaly.idle_after", a.idle_after)
    }

    /// The checked alert rules, in the order written.
    pub fn rules(&self) -> Result<Vec<AlertRule>> {
        let mut seen: HashMap<&str, usize> = HashMap::new();
        let mut out = Vec::with_capacity(self.rules.len());
        for (index, r) in self.rules.iter().enumerate() {
            let name_ok = (1..=64).contains(&r.name.len())
                && r.name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                });
            if !name_ok {
                return Err(ScaleConfigError::BadRuleName {
                    index,
                    name: r.name.clone(),
                });
            }
            if let Some(&first) = seen.get(r.name.as_str()) {
                return Err(ScaleConfigError::DuplicateRule {
                    index,
                    name: r.name.clone(),
                    first,
                });
            }
            seen.insert(&r.name, index);
            if r.owner.trim().is_empty() {
                return Err(ScaleConfigError::NoOwner { index });
            }
            positive(&format!("rules[{index}].respond_within"), r.respond_within)?;
            if let Some(every) = r.repeat_every {
                positive(&format!("rules[{index}].repeat_every"), every.0)?;
            }
            out.push(AlertRule {
                name: r.name.clone(),
                condition: condition(index, &r.when)?,
                for_: r.for_,
                keep_firing_for: r.keep_firing_for,
                level: r.level,
                route: Route {
                    owner: r.owner.clone(),
                    respond_within: r.respond_within,
                    repeat_every: r.repeat_every.map(|h| h.0),
                },
            });
        }
        Ok(out)
    }
}

fn level_field(signal: Signal) -> &'static str {
    match signal {
        Signal::Concurrency => "concurrency_pct",
        Signal::Throughput => "throughput_pct",
        Signal::LatencyP99 => "latency_p99_ms",
        Signal::AuditQueue => "audit_queue_pct",
        Signal::Storage => "storage_pct",
        Signal::TimeToFull => "time_to_full_hours",
    }
}

fn condition(index: usize, w: &WhenConfig) -> Result<Condition> {
    let bad = |problem| Err(ScaleConfigError::BadCondition { index, problem });
    let kinds = usize::from(w.signal.is_some())
        + usize::from(w.burn_rate.is_some())
        + usize::from(w.storage_forecast)
        + usize::from(w.deny_rate_anomaly);
    if kinds != 1 {
        return bad(
            "give exactly one of `signal`, `burn_rate`, `storage_forecast = true`, `deny_rate_anomaly = true`",
        );
    }
    let tests = usize::from(w.level.is_some())
        + usize::from(w.above.is_some())
        + usize::from(w.below.is_some());
    let Some(signal) = w.signal else {
        if tests != 0 {
            return bad("`level`, `above` and `below` go with `signal` only");
        }
        return Ok(if let Some(tier) = w.burn_rate {
            Condition::BurnRate { tier }
        } else if w.storage_forecast {
            Condition::StorageForecast
        } else {
            Condition::DenyRateAnomaly
        });
    };
    if tests != 1 {
        return bad("a `signal` needs exactly one of `level`, `above`, `below`");
    }
    if let Some(at_least) = w.level {
        if at_least == Level::Green {
            return bad("`level = \"green\"` always holds; use yellow, orange or red");
        }
        return Ok(Condition::Level { signal, at_least });
    }
    let value = w.above.or(w.below).unwrap_or(f64::NAN);
    if !value.is_finite() {
        return bad("`above` / `below` must be a finite number");
    }
    Ok(if w.above.is_some() {
        Condition::Above { signal, value }
    } else {
        Condition::Below { signal, value }
    })
}

/// The rules in force when `[[scale.rules]]` is not written. Every rule goes to
/// `oncall`; RED rules must be answered within 15 minutes, except storage at 99 %,
/// which has an hour (SPEC §6), ORANGE ones within 4 hours, the slow SLO burn and
/// storage at 90 % within a working day.
pub fn default_rules() -> Vec<RuleConfig> {
    const MIN: u64 = 60;
    const HOUR: u64 = 3600;
    let rule = |name: &str,
                when: WhenConfig,
                for_s: u64,
                keep_s: u64,
                level: Level,
                respond_s: u64,
                repeat_s: Option<u64>| RuleConfig {
        name: name.into(),
        when,
        for_: Duration::from_secs(for_s),
        keep_firing_for: Duration::from_secs(keep_s),
        level,
        owner: "oncall".into(),
        respond_within: Duration::from_secs(respond_s),
        repeat_every: repeat_s.map(|s| HumanDuration(Duration::from_secs(s))),
    };
    let at = |signal, level| WhenConfig {
        signal: Some(signal),
        level: Some(level),
        ..WhenConfig::default()
    };
    use Level::{Orange, Red, Yellow};
    use Signal::*;
    vec![
        rule(
            "concurrency-red",
            at(Concurrency, Red),
            30,
            MIN,
            Red,
            15 * MIN,
            Some(30 * MIN),
        ),
        rule(
            "concurrency-orange",
            at(Concurrency, Orange),
            2 * MIN,
            5 * MIN,
            Orange,
            4 * HOUR,
            None,
        ),
        rule(
            "throughput-red",
            at(Throughput, Red),
            2 * MIN,
            5 * MIN,
            Red,
            15 * MIN,
            Some(30 * MIN),
        ),
        rule(
            "latency-p99-red",
            at(LatencyP99, Red),
            2 * MIN,
            5 * MIN,
            Red,
            15 * MIN,
            Some(30 * MIN),
        ),
        rule(
            "latency-p99-orange",
            at(LatencyP99, Orange),
            5 * MIN,
            5 * MIN,
            Orange,
            4 * HOUR,
            None,
        ),
        rule(
            "audit-queue-red",
            at(AuditQueue, Red),
            MIN,
            5 * MIN,
            Red,
            15 * MIN,
            Some(30 * MIN),
        ),
        rule(
            "storage-red",
            at(Storage, Red),
            MIN,
            5 * MIN,
            Red,
            HOUR,
            Some(15 * MIN),
        ),
        rule(
            "storage-orange",
            at(Storage, Orange),
            5 * MIN,
            10 * MIN,
            Orange,
            24 * HOUR,
            None,
        ),
        rule(
            "storage-full-forecast",
            WhenConfig {
                storage_forecast: true,
                ..WhenConfig::default()
            },
            10 * MIN,
            30 * MIN,
            Orange,
            4 * HOUR,
            None,
        ),
        rule(
            "slo-burn-page",
            WhenConfig {
                burn_rate: Some(BurnTier::Page),
                ..WhenConfig::default()
            },
            0,
            0,
            Red,
            15 * MIN,
            Some(HOUR),
        ),
        rule(
            "slo-burn-ticket",
            WhenConfig {
                burn_rate: Some(BurnTier::Ticket),
                ..WhenConfig::default()
            },
            0,
            0,
            Orange,
            24 * HOUR,
            None,
        ),
        rule(
            "pack-deny-anomaly",
            WhenConfig {
                deny_rate_anomaly: true,
                ..WhenConfig::default()
            },
            0,
            5 * MIN,
            Yellow,
            4 * HOUR,
            None,
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Deserialize)]
    struct File {
        #[serde(default)]
        scale: ScaleConfig,
    }

    fn parse(toml_text: &str) -> std::result::Result<ScaleConfig, String> {
        toml::from_str::<File>(toml_text)
            .map(|f| f.scale)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_are_valid_and_match_the_spec() {
        let c = parse("").unwrap();
        assert_eq!(c, ScaleConfig::default());
        c.validate().unwrap();
        let rules = c.rules().unwrap();
        assert_eq!(rules.len(), 12);
        let storage = rules.iter().find(|r| r.name == "storage-red").unwrap();
        assert_eq!(storage.route.respond_within, Duration::from_secs(3600));
        assert_eq!(c.levels.concurrency_pct.red, 100.0);
        assert_eq!(c.levels.storage_pct.yellow, 70.0);
        assert_eq!(c.levels.latency_p99_ms.orange, 200.0);
        assert_eq!(c.slo.page.factor, 14.4);
        assert_eq!(c.slo.ticket.long_window, Duration::from_secs(6 * 3600));
    }

    #[test]
    fn a_full_table_parses() {
        let c = parse(
            r#"
            [scale]
            evaluate_every = "5s"
            level_window = "30s"
            [scale.levels]
            latency_p99_ms = { yellow = 50, orange = 80, red = 120 }
            [scale.slo]
            target = 0.99
            page = { factor = 10, long_window = "1h", short_window = "5m" }
            [scale.anomaly]
            z_threshold = 3.5
            idle_after = "30m"
            [[scale.rules]]
            name = "p99-over-300"
            when = { signal = "latency_p99", above = 300 }
            for = "2m"
            level = "orange"
            owner = "decisions-team"
            respond_within = "4h"
            repeat_every = "1h"
            [[scale.rules]]
            name = "burn"
            when = { burn_rate = "page" }
            level = "red"
            owner = "oncall"
            respond_within = "15m"
            "#,
        )
        .unwrap();
        c.validate().unwrap();
        assert_eq!(c.evaluate_every, Duration::from_secs(5));
        assert_eq!(c.levels.latency_p99_ms.red, 120.0);
        assert_eq!(
            c.levels.storage_pct.red, 99.0,
            "untouched tables keep defaults"
        );
        assert_eq!(c.anomaly.idle_after, Duration::from_secs(1800));
        let rules = c.rules().unwrap();
        assert_eq!(rules.len(), 2, "written rules replace the defaults");
        assert_eq!(
            rules[0].condition,
            Condition::Above {
                signal: Signal::LatencyP99,
                value: 300.0
            }
        );
        assert_eq!(rules[0].for_, Duration::from_secs(120));
        assert_eq!(rules[0].route.repeat_every, Some(Duration::from_secs(3600)));
        assert_eq!(
            rules[1].condition,
            Condition::BurnRate {
                tier: BurnTier::Page
            }
        );
        assert_eq!(rules[1].keep_firing_for, Duration::ZERO);
    }

    #[test]
    fn unknown_and_malformed_fields_are_refused_by_name() {
        for (text, needle) in [
            ("[scale]\nevaluate_evry = \"5s\"", "evaluate_evry"),
            (
                "[scale.levels]\nstorage = { yellow = 1, orange = 2, red = 3 }",
                "storage",
            ),
            (
                "[scale.levels]\nstorage_pct = { yellow = 1, orange = 2, red = 3, blue = 4 }",
                "blue",
            ),
            ("[scale]\nbucket = \"10 seconds\"", "duration"),
            ("[scale.slo]\npage = { factor = 14.4 }", "long_window"),
        ] {
            let err = parse(text).unwrap_err();
            assert!(err.contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn validation_names_the_field() {
        // (edit, message fragment)
        #[allow(clippy::type_complexity)]
        let table: Vec<(Box<dyn Fn(&mut ScaleConfig)>, &str)> = vec![
            (
                Box::new(|c| c.levels.latency_p99_ms.orange = 600.0),
                "scale.levels.latency_p99_ms: thresholds must increase",
            ),
            (
                Box::new(|c| c.levels.time_to_full_hours.red = 48.0),
                "scale.levels.time_to_full_hours: thresholds must decrease",
            ),
            (
                Box::new(|c| c.levels.storage_pct.yellow = f64::NAN),
                "scale.levels.storage_pct.yellow: NaN is out of range",
            ),
            (
                Box::new(|c| c.bucket = Duration::ZERO),
                "scale.bucket: must be greater than zero",
            ),
            (
                Box::new(|c| c.long_window = Duration::from_secs(30)),
                "scale.long_window (30s) must be at least scale.level_window",
            ),
            (
                Box::new(|c| c.slo.target = 1.0),
                "scale.slo.target: 1 is out of range",
            ),
            (
                Box::new(|c| c.slo.ticket.short_window = Duration::from_secs(7 * 3600)),
                "scale.slo.ticket.long_window",
            ),
            (Box::new(|c| c.anomaly.alpha = 0.0), "scale.anomaly.alpha"),
            (
                Box::new(|c| c.forecast.min_samples = 1),
                "scale.forecast.min_samples",
            ),
            (
                Box::new(|c| c.rules[3].name = "concurrency-red".into()),
                "scale.rules[3].name: `concurrency-red` is also the name of rules[0]",
            ),
            (
                Box::new(|c| c.rules[1].name = "Bad Name".into()),
                "scale.rules[1].name",
            ),
            (
                Box::new(|c| c.rules[2].owner = " ".into()),
                "scale.rules[2].owner",
            ),
            (
                Box::new(|c| c.rules[0].when.above = Some(5.0)),
                "scale.rules[0].when: a `signal` needs exactly one",
            ),
            (
                Box::new(|c| c.rules[0].when.storage_forecast = true),
                "scale.rules[0].when: give exactly one",
            ),
            (
                Box::new(|c| c.rules[9].when.level = Some(Level::Red)),
                "scale.rules[9].when: `level`, `above` and `below` go with `signal` only",
            ),
            (
                Box::new(|c| c.rules[0].when.level = Some(Level::Green)),
                "scale.rules[0].when: `level = \"green\"` always holds",
            ),
            (
                Box::new(|c| c.rules[4].respond_within = Duration::ZERO),
                "scale.rules[4].respond_within",
            ),
        ];
        for (edit, fragment) in table {
            let mut c = ScaleConfig::default();
            edit(&mut c);
            let err = c.validate().unwrap_err().to_string();
            assert!(err.contains(fragment), "wanted `{fragment}` in `{err}`");
        }
    }
}
