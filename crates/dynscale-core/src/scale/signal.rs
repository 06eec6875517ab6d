//! Signals and their levels: GREEN / YELLOW / ORANGE / RED per signal, from the
//! node's gauges, the decision window and the storage forecast.
//!
//! Each signal has one unit, used for its value, its level thresholds and the
//! threshold rules written over it: concurrency, throughput, audit queue and storage
//! in percent of their limit or capacity, latency p99 in milliseconds, time to full
//! in hours. A signal whose limit is unknown (no admission limit configured, no
//! certified capacity) has no value and no level.

use std::fmt;

use serde::{Deserialize, Serialize};

use super::forecast::Forecast;
use super::sketch::LatencySummary;

/// How bad a signal is.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    #[default]
    Green,
    Yellow,
    Orange,
    Red,
}

impl Level {
    /// Every level, best first.
    pub const ALL: [Level; 4] = [Level::Green, Level::Yellow, Level::Orange, Level::Red];

    /// The level's name as operators read it: `GREEN` … `RED`.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Green => "GREEN",
            Level::Yellow => "YELLOW",
            Level::Orange => "ORANGE",
            Level::Red => "RED",
        }
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A tracked signal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Signal {
    /// In-flight requests in percent of the admission limit.
    Concurrency,
    /// Decisions per second in percent of the certified capacity.
    Throughput,
    /// Decision latency p99 in milliseconds over the level window.
    LatencyP99,
    /// Audit writer queue depth in percent of its capacity.
    AuditQueue,
    /// Storage used in percent of its capacity.
    Storage,
    /// Predicted hours until storage is full (lower is worse).
    TimeToFull,
}

impl Signal {
    /// Every signal, in the order status lists them.
    pub const ALL: [Signal; 6] = [
        Signal::Concurrency,
        Signal::Throughput,
        Signal::LatencyP99,
        Signal::AuditQueue,
        Signal::Storage,
        Signal::TimeToFull,
    ];

    /// The signal's name in configuration and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            Signal::Concurrency => "concurrency",
            Signal::Throughput => "throughput",
            Signal::LatencyP99 => "latency_p99",
            Signal::AuditQueue => "audit_queue",
            Signal::Storage => "storage",
            Signal::TimeToFull => "time_to_full",
        }
    }

    /// The unit of the signal's value and thresholds.
    pub fn unit(self) -> &'static str {
        match self {
            Signal::LatencyP99 => "ms",
            Signal::TimeToFull => "h",
            _ => "%",
        }
    }

    /// Whether a larger value is worse (all but time to full).
    pub fn higher_is_worse(self) -> bool {
        !matches!(self, Signal::TimeToFull)
    }

    fn index(self) -> usize {
        self as usize
    }
}

impl fmt::Display for Signal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The values at which a signal turns YELLOW, ORANGE and RED. For a signal where
/// higher is worse they increase and a value at or above one reaches its level; for
/// time to full they decrease and a value at or below one reaches it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Thresholds {
    pub yellow: f64,
    pub orange: f64,
    pub red: f64,
}

impl Thresholds {
    /// The level of `value` for a signal where higher is worse or not.
    pub fn level(&self, value: f64, higher_is_worse: bool) -> Level {
        let reaches = |t: f64| {
            if higher_is_worse {
                value >= t
            } else {
                value <= t
            }
        };
        if reaches(self.red) {
            Level::Red
        } else if reaches(self.orange) {
            Level::Orange
        } else if reaches(self.yellow) {
            Level::Yellow
        } else {
            Level::Green
        }
    }
}

/// The thresholds of every signal (`[scale.levels]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LevelThresholds {
    /// SPEC default 50 / 75 / 100 % of the admission limit.
    pub concurrency_pct: Thresholds,
    /// 50 / 75 / 90 % of the certified decisions per second: past 90 % the node has
    /// no headroom left for a burst.
    pub throughput_pct: Thresholds,
    /// SPEC default 100 / 200 / 500 ms.
    pub latency_p99_ms: Thresholds,
    /// 25 / 50 / 90 % of the audit queue: a group-commit queue is drained every
    /// batch window, so a quarter full already means the writer falls behind, and at
    /// 100 % decisions wait for it.
    pub audit_queue_pct: Thresholds,
    /// SPEC default 70 / 90 / 99 %.
    pub storage_pct: Thresholds,
    /// 72 / 24 / 6 hours: three days leave time to plan, one day is the
    /// predictive alert's default horizon, six hours leave time to act.
    pub time_to_full_hours: Thresholds,
}

impl Default for LevelThresholds {
    fn default() -> Self {
        let t = |yellow, orange, red| Thresholds {
            yellow,
            orange,
            red,
        };
        LevelThresholds {
            concurrency_pct: t(50.0, 75.0, 100.0),
            throughput_pct: t(50.0, 75.0, 90.0),
            latency_p99_ms: t(100.0, 200.0, 500.0),
            audit_queue_pct: t(25.0, 50.0, 90.0),
            storage_pct: t(70.0, 90.0, 99.0),
            time_to_full_hours: t(72.0, 24.0, 6.0),
        }
    }
}

impl LevelThresholds {
    /// The thresholds of `signal`.
    pub fn of(&self, signal: Signal) -> &Thresholds {
        match signal {
            Signal::Concurrency => &self.concurrency_pct,
            Signal::Throughput => &self.throughput_pct,
            Signal::LatencyP99 => &self.latency_p99_ms,
            Signal::AuditQueue => &self.audit_queue_pct,
            Signal::Storage => &self.storage_pct,
            Signal::TimeToFull => &self.time_to_full_hours,
        }
    }
}

/// What the server measures directly at each evaluation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Gauges {
    /// Requests (decisions and writes) being served now.
    pub in_flight: u64,
    /// The admission limit; `None` when admission is unbounded.
    pub in_flight_limit: Option<u64>,
    /// Decisions per second this node sustained when certified (`dynscale certify`);
    /// `None` before certification.
    pub throughput_capacity_per_s: Option<f64>,
    /// Entries waiting in the audit writer's queue.
    pub audit_queue_depth: u64,
    /// The queue's bound.
    pub audit_queue_capacity: Option<u64>,
    /// Bytes used on the data volume (or the configured audit cap's share).
    pub storage_used_bytes: u64,
    /// Bytes the volume (or cap) can hold; `None` when unknown.
    pub storage_capacity_bytes: Option<u64>,
}

/// One signal's value (in its unit) and level; both `None` when not measurable.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Reading {
    pub signal: Signal,
    pub value: Option<f64>,
    pub level: Option<Level>,
}

/// Every signal's reading at one instant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Readings(pub [Reading; 6]);

impl Readings {
    /// Reads every signal. `latency` is the level window's summary; `forecast` the
    /// storage forecast.
    pub fn read(
        thresholds: &LevelThresholds,
        gauges: &Gauges,
        latency: &LatencySummary,
        forecast: &Forecast,
    ) -> Readings {
        let pct = |used: f64, limit: Option<f64>| match limit {
            Some(l) if l > 0.0 => Some(used / l * 100.0),
            _ => None,
        };
        let value = |signal: Signal| -> Option<f64> {
            match signal {
                Signal::Concurrency => pct(
                    gauges.in_flight as f64,
                    gauges.in_flight_limit.map(|l| l as f64),
                ),
                Signal::Throughput => {
                    pct(latency.throughput_per_s, gauges.throughput_capacity_per_s)
                }
                Signal::LatencyP99 => {
                    (!latency.is_empty()).then_some(latency.p99.as_secs_f64() * 1000.0)
                }
                Signal::AuditQueue => pct(
                    gauges.audit_queue_depth as f64,
                    gauges.audit_queue_capacity.map(|c| c as f64),
                ),
                Signal::Storage => pct(
                    gauges.storage_used_bytes as f64,
                    gauges.storage_capacity_bytes.map(|c| c as f64),
                ),
                Signal::TimeToFull => match forecast {
                    Forecast::FullIn(d) => Some(d.as_secs_f64() / 3600.0),
                    _ => None,
                },
            }
        };
        Readings(Signal::ALL.map(|signal| {
            let value = value(signal);
            let level = match (signal, value) {
                (_, Some(v)) => Some(thresholds.of(signal).level(v, signal.higher_is_worse())),
                // Storage that is not filling up will never be full.
                (Signal::TimeToFull, None) if matches!(forecast, Forecast::NotFilling) => {
                    Some(Level::Green)
                }
                _ => None,
            };
            Reading {
                signal,
                value,
                level,
            }
        }))
    }

    /// The reading of `signal`.
    pub fn get(&self, signal: Signal) -> &Reading {
        &self.0[signal.index()]
    }

    /// The worst level of any measurable signal (GREEN when none is).
    pub fn overall(&self) -> Level {
        self.0
            .iter()
            .filter_map(|r| r.level)
            .max()
            .unwrap_or(Level::Green)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn spec_default_levels() {
        let t = LevelThresholds::default();
        // (signal, value, level)
        let table = [
            (Signal::Concurrency, 49.9, Level::Green),
            (Signal::Concurrency, 50.0, Level::Yellow),
            (Signal::Concurrency, 75.0, Level::Orange),
            (Signal::Concurrency, 99.9, Level::Orange),
            (Signal::Concurrency, 100.0, Level::Red),
            (Signal::Storage, 69.0, Level::Green),
            (Signal::Storage, 70.0, Level::Yellow),
            (Signal::Storage, 90.0, Level::Orange),
            (Signal::Storage, 99.0, Level::Red),
            (Signal::LatencyP99, 99.0, Level::Green),
            (Signal::LatencyP99, 100.0, Level::Yellow),
            (Signal::LatencyP99, 200.0, Level::Orange),
            (Signal::LatencyP99, 500.0, Level::Red),
            (Signal::TimeToFull, 100.0, Level::Green),
            (Signal::TimeToFull, 72.0, Level::Yellow),
            (Signal::TimeToFull, 24.0, Level::Orange),
            (Signal::TimeToFull, 0.5, Level::Red),
        ];
        for (signal, value, want) in table {
            let got = t.of(signal).level(value, signal.higher_is_worse());
            assert_eq!(got, want, "{signal} at {value}");
        }
    }

    #[test]
    fn readings_from_gauges_window_and_forecast() {
        let gauges = Gauges {
            in_flight: 80,
            in_flight_limit: Some(100),
            throughput_capacity_per_s: None,
            audit_queue_depth: 10,
            audit_queue_capacity: Some(1000),
            storage_used_bytes: 995,
            storage_capacity_bytes: Some(1000),
        };
        let latency = LatencySummary {
            count: 10,
            throughput_per_s: 1.0,
            p50: Duration::from_millis(5),
            p99: Duration::from_millis(250),
            p999: Duration::from_millis(300),
            max: Duration::from_millis(300),
            covered: Duration::from_secs(10),
        };
        let r = Readings::read(
            &LevelThresholds::default(),
            &gauges,
            &latency,
            &Forecast::FullIn(Duration::from_secs(3 * 3600)),
        );
        let level = |s| r.get(s).level;
        assert_eq!(level(Signal::Concurrency), Some(Level::Orange));
        assert_eq!(
            r.get(Signal::Throughput).value,
            None,
            "no certified capacity"
        );
        assert_eq!(level(Signal::Throughput), None);
        assert_eq!(level(Signal::LatencyP99), Some(Level::Orange));
        assert_eq!(level(Signal::AuditQueue), Some(Level::Green));
        assert_eq!(level(Signal::Storage), Some(Level::Red));
        assert_eq!(r.get(Signal::TimeToFull).value, Some(3.0));
        assert_eq!(level(Signal::TimeToFull), Some(Level::Red));
        assert_eq!(r.overall(), Level::Red);

        let empty = LatencySummary {
            count: 0,
            ..latency
        };
        let r = Readings::read(
            &LevelThresholds::default(),
            &Gauges::default(),
            &empty,
            &Forecast::NotFilling,
        );
        assert_eq!(r.get(Signal::LatencyP99).level, None);
        assert_eq!(r.get(Signal::Concurrency).level, None);
        assert_eq!(r.get(Signal::TimeToFull).level, Some(Level::Green));
        assert_eq!(r.overall(), Level::Green);
    }
}
