//! Scale monitoring and alerting (SPEC §6): latency sketches over sliding windows,
//! GREEN / YELLOW / ORANGE / RED levels per signal, alert rules with `for` and
//! `keep_firing_for`, multi-window SLO burn rates, a storage time-to-full forecast
//! and per-pack deny-rate anomalies.
//!
//! Everything here is pure: the current wall-clock time is a [`UnixMs`] passed to
//! every call, hash seeds are passed in, and nothing is sent anywhere. The server
//! owns the clock, the loop and the delivery:
//!
//! - on every decision: [`ShardedRecorder::record`] with a [`DecisionSample`];
//! - every `evaluate_every`: [`ShardedRecorder::stats`] and
//!   [`ShardedRecorder::drain_packs`], its own [`Gauges`], then
//!   [`ScaleMonitor::evaluate`], which returns the [`ScaleStatus`] and the
//!   [`Effect`]s (history records and notifications) to carry out.

pub mod alert;
pub mod anomaly;
pub mod burn;
pub mod config;
pub mod forecast;
pub mod monitor;
pub mod recorder;
pub mod ring;
pub mod signal;
pub mod sketch;
pub mod time;

pub use alert::{
    AlertRule, AlertState, Condition, Effect, Notification, NotificationKind, Observation, Phase,
    Route, Transition, step,
};
pub use anomaly::{AnomalyConfig, AnomalyDetector, PackCount, PackReading, PackTally};
pub use burn::{BurnReading, BurnTier, EventCounts, evaluate_tier};
pub use config::{
    BurnTierConfig, RuleConfig, ScaleConfig, ScaleConfigError, SloConfig, WhenConfig, default_rules,
};
pub use forecast::{Forecast, ForecastConfig, StorageForecaster, time_to_full};
pub use monitor::{AlertKey, Evaluation, ScaleMonitor, ScaleStatus};
pub use recorder::{
    DecisionRecorder, DecisionSample, DecisionStats, RecorderConfig, ShardedRecorder, SloCounts,
};
pub use signal::{Gauges, Level, LevelThresholds, Reading, Readings, Signal, Thresholds};
pub use sketch::{LatencySketch, LatencySummary};
pub use time::UnixMs;
