//! `ScaleMonitor`: one evaluation of every signal and alert rule, the pure heart of
//! the server's scale loop.
//!
//! Every `evaluate_every` the server gathers its [`Gauges`], reads its
//! [`ShardedRecorder`](super::ShardedRecorder) (`stats` and `drain_packs`) and calls
//! [`ScaleMonitor::evaluate`]. It gets back the [`ScaleStatus`] to publish (for
//! `/v1/scale/status` and `/metrics`) and the [`Effect`]s to carry out: transitions
//! to append to the alert history, notifications to deliver. The monitor keeps the
//! alert states, the storage samples and the pack baselines; after a restart the
//! server hands persisted states back with [`ScaleMonitor::restore`].

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use super::alert::{AlertRule, AlertState, Condition, Effect, Observation, step};
use super::anomaly::{AnomalyDetector, PackReading, PackTally};
use super::burn::{BurnReading, BurnTier, evaluate_tier};
use super::config::{ScaleConfig, ScaleConfigError};
use super::forecast::{Forecast, StorageForecaster};
use super::recorder::DecisionStats;
use super::signal::{Gauges, Level, Readings};
use super::time::UnixMs;

/// One alert: a rule, and for per-pack rules the pack.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AlertKey {
    pub rule: String,
    pub instance: Option<String>,
}

/// Everything one evaluation saw.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScaleStatus {
    pub at: UnixMs,
    /// The worst level of any signal.
    pub overall: Level,
    pub signals: Readings,
    pub decisions: DecisionStats,
    /// Page, then ticket.
    pub burn: [BurnReading; 2],
    pub forecast: Forecast,
    /// The packs whose deny rate was anomalous in this interval.
    pub anomalies: Vec<PackReading>,
}

/// The result of one evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct Evaluation {
    pub status: ScaleStatus,
    /// In rule order, then pack order.
    pub effects: Vec<Effect>,
}

/// The state of scale monitoring between evaluations.
#[derive(Debug, Clone)]
pub struct ScaleMonitor {
    config: ScaleConfig,
    rules: Vec<AlertRule>,
    forecaster: StorageForecaster,
    anomaly: AnomalyDetector,
    alerts: BTreeMap<AlertKey, AlertState>,
}

impl ScaleMonitor {
    /// A monitor for `config`, refused with the field at fault if it is invalid.
    /// `hash_seed` keys the per-pack tables (secret and random; the server draws it).
    pub fn new(config: ScaleConfig, hash_seed: u64) -> Result<Self, ScaleConfigError> {
        config.validate()?;
        let rules = config.rules()?;
        Ok(ScaleMonitor {
            forecaster: StorageForecaster::new(config.forecast.clone()),
            anomaly: AnomalyDetector::new(config.anomaly.clone(), hash_seed),
            rules,
            config,
            alerts: BTreeMap::new(),
        })
    }

    /// Evaluates every signal and rule at `now`. `packs` is the per-pack tally
    /// drained since the previous evaluation.
    pub fn evaluate(
        &mut self,
        now: UnixMs,
        gauges: &Gauges,
        decisions: &DecisionStats,
        packs: &PackTally,
    ) -> Evaluation {
        self.forecaster.observe(now, gauges.storage_used_bytes);
        let forecast = self.forecaster.forecast(now, gauges.storage_capacity_bytes);
        let signals = Readings::read(
            &self.config.levels,
            gauges,
            &decisions.level_window,
            &forecast,
        );
        let slo = &self.config.slo;
        let burn = BurnTier::ALL.map(|tier| {
            let (long, short) = decisions.slo.tier(tier);
            evaluate_tier(
                tier,
                slo.tier(tier).factor,
                slo.target,
                long,
                short,
                slo.min_events,
            )
        });
        let readings = self.anomaly.observe(now, packs);
        let status = ScaleStatus {
            at: now,
            overall: signals.overall(),
            signals,
            decisions: *decisions,
            burn,
            forecast,
            anomalies: readings.iter().filter(|r| r.anomalous).cloned().collect(),
        };
        let mut effects = Vec::new();
        for rule in &self.rules {
            if rule.condition == Condition::DenyRateAnomaly {
                let mut seen: BTreeMap<String, Observation> = readings
                    .iter()
                    .map(|r| {
                        let obs = Observation {
                            holds: r.anomalous,
                            value: r.z,
                        };
                        (r.pack.as_str().to_owned(), obs)
                    })
                    .collect();
                let open: BTreeSet<String> = self
                    .alerts
                    .keys()
                    .filter(|k| k.rule == rule.name)
                    .filter_map(|k| k.instance.clone())
                    .collect();
                for pack in open {
                    seen.entry(pack).or_insert(Observation {
                        holds: false,
                        value: None,
                    });
                }
                for (pack, obs) in seen {
                    let key = AlertKey {
                        rule: rule.name.clone(),
                        instance: Some(pack),
                    };
                    advance(&mut self.alerts, rule, key, obs, now, &mut effects);
                }
            } else {
                let obs = observe(&rule.condition, &status, self.config.forecast.horizon);
                let key = AlertKey {
                    rule: rule.name.clone(),
                    instance: None,
                };
                advance(&mut self.alerts, rule, key, obs, now, &mut effects);
            }
        }
        Evaluation { status, effects }
    }

    /// Every alert that is pending, firing or just resolved, with its rule.
    pub fn alerts(&self) -> impl Iterator<Item = (&AlertKey, &AlertState, &AlertRule)> {
        self.alerts.iter().filter_map(|(k, s)| {
            let rule = self.rules.iter().find(|r| r.name == k.rule)?;
            Some((k, s, rule))
        })
    }

    /// Puts back an alert's persisted state after a restart. Returns `false` (and
    /// keeps nothing) when no configured rule has that name any more, or when the
    /// state is inactive.
    pub fn restore(&mut self, key: AlertKey, state: AlertState) -> bool {
        let known = self.rules.iter().any(|r| {
            r.name == key.rule
                && key.instance.is_some() == (r.condition == Condition::DenyRateAnomaly)
        });
        if !known || state == AlertState::Inactive {
            return false;
        }
        self.alerts.insert(key, state);
        true
    }

    /// The checked rules in force.
    pub fn rules(&self) -> &[AlertRule] {
        &self.rules
    }

    /// The configuration in force.
    pub fn config(&self) -> &ScaleConfig {
        &self.config
    }
}

fn advance(
    alerts: &mut BTreeMap<AlertKey, AlertState>,
    rule: &AlertRule,
    key: AlertKey,
    obs: Observation,
    now: UnixMs,
    effects: &mut Vec<Effect>,
) {
    let state = alerts.get(&key).copied().unwrap_or_default();
    let (next, mut out) = step(rule, key.instance.as_deref(), &state, obs, now);
    effects.append(&mut out);
    if next == AlertState::Inactive {
        alerts.remove(&key);
    } else {
        alerts.insert(key, next);
    }
}

/// What `condition` sees in `status` (for every condition but the per-pack one).
fn observe(
    condition: &Condition,
    status: &ScaleStatus,
    horizon: std::time::Duration,
) -> Observation {
    match *condition {
        Condition::Level { signal, at_least } => {
            let r = status.signals.get(signal);
            Observation {
                holds: r.level.is_some_and(|l| l >= at_least),
                value: r.value,
            }
        }
        Condition::Above { signal, value } => {
            let v = status.signals.get(signal).value;
            Observation {
                holds: v.is_some_and(|v| v > value),
                value: v,
            }
        }
        Condition::Below { signal, value } => {
            let v = status.signals.get(signal).value;
            Observation {
                holds: v.is_some_and(|v| v < value),
                value: v,
            }
        }
        Condition::BurnRate { tier } => {
            let r = status.burn.iter().find(|b| b.tier == tier);
            Observation {
                holds: r.is_some_and(|r| r.burning),
                value: r.and_then(|r| r.long_rate),
            }
        }
        Condition::StorageForecast => match status.forecast {
            Forecast::FullIn(d) => Observation {
                holds: d <= horizon,
                value: Some(d.as_secs_f64() / 3600.0),
            },
            _ => Observation {
                holds: false,
                value: None,
            },
        },
        Condition::DenyRateAnomaly => Observation {
            holds: !status.anomalies.is_empty(),
            value: None,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::PackId;
    use crate::scale::alert::{NotificationKind, Phase};
    use crate::scale::anomaly::PackCount;
    use crate::scale::recorder::{DecisionRecorder, DecisionSample, RecorderConfig};
    use std::time::Duration;

    const T0: u64 = 1_699_999_200_000;

    fn gauges(storage_used: u64) -> Gauges {
        Gauges {
            in_flight: 10,
            in_flight_limit: Some(100),
            throughput_capacity_per_s: Some(1000.0),
            audit_queue_depth: 0,
            audit_queue_capacity: Some(1024),
            storage_used_bytes: storage_used,
            storage_capacity_bytes: Some(1000),
        }
    }

    fn summary(effects: &[Effect]) -> Vec<String> {
        effects
            .iter()
            .map(|e| match e {
                Effect::Record(t) => format!(
                    "{}{} {:?}->{:?}",
                    t.alert,
                    t.instance
                        .as_deref()
                        .map(|i| format!("[{i}]"))
                        .unwrap_or_default(),
                    t.from,
                    t.to
                ),
                Effect::Notify(n) => format!("notify {} {:?} {}", n.alert, n.kind, n.owner),
            })
            .collect()
    }

    #[test]
    fn storage_rises_to_red_fires_and_resolves() {
        let mut m = ScaleMonitor::new(ScaleConfig::default(), 1).unwrap();
        let rc = RecorderConfig::from_scale(m.config(), 1);
        let stats = DecisionRecorder::new(&rc, UnixMs(T0)).stats(&rc, UnixMs(T0));
        let empty = PackTally::new(10, 1);
        let mut log = Vec::new();
        // Every 10 s for 4 minutes: storage at 50 %, then 995/1000 from 30 s to 180 s.
        for i in 0..24u64 {
            let used = if (3..18).contains(&i) { 995 } else { 500 };
            let e = m.evaluate(UnixMs(T0 + i * 10_000), &gauges(used), &stats, &empty);
            for line in summary(&e.effects) {
                if line.starts_with("storage-red") || line.contains("notify storage-red") {
                    log.push(format!("{}s {line}", i * 10));
                }
            }
        }
        assert_eq!(
            log,
            [
                "30s storage-red Inactive->Pending",
                "90s storage-red Pending->Firing",
                "90s notify storage-red Firing oncall",
                // Clears at 180 s; keeps firing for 5 minutes, past the end of the run.
            ]
        );
        let active: Vec<_> = m
            .alerts()
            .map(|(k, s, _)| (k.rule.clone(), s.phase()))
            .collect();
        assert!(active.contains(&("storage-red".into(), Phase::Firing)));
    }

    #[test]
    fn burn_rate_pages_on_a_fast_burn() {
        let mut m = ScaleMonitor::new(ScaleConfig::default(), 1).unwrap();
        let rc = RecorderConfig::from_scale(m.config(), 1);
        let mut r = DecisionRecorder::new(&rc, UnixMs(T0));
        // 20 minutes at 100/s, 2 % failing: burn rate 20 on both page windows, and
        // on the ticket windows too.
        for s in 0..1200u64 {
            for k in 0..100 {
                r.record(
                    UnixMs(T0 + s * 1000),
                    &DecisionSample {
                        latency: Duration::from_millis(2),
                        error: k < 2,
                        denied: false,
                        pack: None,
                    },
                );
            }
        }
        let now = UnixMs(T0 + 1_199_000);
        let e = m.evaluate(now, &gauges(0), &r.stats(&rc, now), &PackTally::new(1, 1));
        let [page, ticket] = e.status.burn;
        assert!(page.burning && ticket.burning, "{page:?} {ticket:?}");
        assert!((page.long_rate.unwrap() - 20.0).abs() < 1e-6);
        let lines = summary(&e.effects);
        assert!(
            lines.contains(&"notify slo-burn-page Firing oncall".to_string()),
            "{lines:?}"
        );
        assert!(lines.contains(&"notify slo-burn-ticket Firing oncall".to_string()));
        let page_notice = e
            .effects
            .iter()
            .find_map(|e| match e {
                Effect::Notify(n) if n.alert == "slo-burn-page" => Some(n.clone()),
                _ => None,
            })
            .unwrap();
        assert_eq!(page_notice.level, Level::Red);
        assert_eq!(
            page_notice.respond_by,
            now.saturating_add(Duration::from_secs(900))
        );
        assert_eq!(page_notice.kind, NotificationKind::Firing);
    }

    #[test]
    fn storage_forecast_fires_within_the_horizon() {
        let mut cfg = ScaleConfig::default();
        cfg.forecast.horizon = Duration::from_secs(3600);
        let rule = cfg
            .rules
            .iter_mut()
            .find(|r| r.name == "storage-full-forecast")
            .unwrap();
        rule.for_ = Duration::ZERO;
        let mut m = ScaleMonitor::new(cfg, 1).unwrap();
        let rc = RecorderConfig::from_scale(m.config(), 1);
        let stats = DecisionRecorder::new(&rc, UnixMs(T0)).stats(&rc, UnixMs(T0));
        let tally = PackTally::new(1, 1);
        // One byte a minute, from 500 of 1000: 500 minutes left, outside one hour.
        let mut fired_at = None;
        for m_ in 0..500u64 {
            let used = if m_ < 20 {
                500 + m_
            } else {
                519 + (m_ - 19) * 10
            };
            let e = m.evaluate(UnixMs(T0 + m_ * 60_000), &gauges(used), &stats, &tally);
            if summary(&e.effects)
                .iter()
                .any(|l| l == "notify storage-full-forecast Firing oncall")
            {
                fired_at = Some(m_);
                break;
            }
        }
        // From minute 20 it grows 10 bytes a minute; with a six-hour window of
        // samples the fitted slope catches up and the forecast falls under an hour
        // well before storage is full (minute 67).
        let at = fired_at.expect("the forecast alert fires");
        assert!((20..67).contains(&at), "{at}");
    }

    #[test]
    fn deny_anomalies_are_per_pack_alerts() {
        let mut cfg = ScaleConfig::default();
        cfg.anomaly.warmup_intervals = 3;
        let mut m = ScaleMonitor::new(cfg, 1).unwrap();
        let rc = RecorderConfig::from_scale(m.config(), 1);
        let stats = DecisionRecorder::new(&rc, UnixMs(T0)).stats(&rc, UnixMs(T0));
        let tally = |billing_denies: u64| {
            let mut t = PackTally::new(100, 1);
            t.add(
                &PackId::new("billing"),
                PackCount {
                    decisions: 100,
                    denies: billing_denies,
                },
            );
            t.add(
                &PackId::new("search"),
                PackCount {
                    decisions: 100,
                    denies: 3,
                },
            );
            t
        };
        let mut lines = Vec::new();
        for i in 0..40u64 {
            let denies = if (5..7).contains(&i) { 80 } else { 3 };
            let e = m.evaluate(UnixMs(T0 + i * 10_000), &gauges(0), &stats, &tally(denies));
            if i == 5 {
                assert_eq!(e.status.anomalies.len(), 1);
                assert_eq!(e.status.anomalies[0].pack.as_str(), "billing");
            }
            for l in summary(&e.effects) {
                lines.push(format!("{}s {l}", i * 10));
            }
        }
        assert_eq!(
            lines,
            [
                "50s pack-deny-anomaly[billing] Inactive->Firing",
                "50s notify pack-deny-anomaly Firing oncall",
                // The second 80 % interval (60 s) is already 3 sigma of a baseline
                // that moved: not anomalous. keep_firing_for is 5 minutes from 60 s.
                "360s pack-deny-anomaly[billing] Firing->Resolved",
                "360s notify pack-deny-anomaly Resolved oncall",
            ]
        );
        assert_eq!(
            m.alerts().count(),
            0,
            "resolved, then inactive, then dropped"
        );
    }

    #[test]
    fn restore_keeps_known_alerts_only() {
        let mut m = ScaleMonitor::new(ScaleConfig::default(), 1).unwrap();
        let firing = AlertState::Firing {
            since: UnixMs(T0),
            clear_since: None,
            notified_at: UnixMs(T0),
        };
        let key = |rule: &str, instance: Option<&str>| AlertKey {
            rule: rule.into(),
            instance: instance.map(str::to_owned),
        };
        assert!(m.restore(key("storage-red", None), firing));
        assert!(m.restore(key("pack-deny-anomaly", Some("billing")), firing));
        assert!(!m.restore(key("gone-rule", None), firing));
        assert!(!m.restore(key("storage-red", Some("x")), firing));
        assert!(!m.restore(key("storage-orange", None), AlertState::Inactive));
        assert_eq!(m.alerts().count(), 2);
        // The restored alert resolves like any other once storage is fine.
        let rc = RecorderConfig::from_scale(m.config(), 1);
        let stats = DecisionRecorder::new(&rc, UnixMs(T0)).stats(&rc, UnixMs(T0));
        let later = UnixMs(T0 + 3_600_000);
        let e = m.evaluate(later, &gauges(100), &stats, &PackTally::new(1, 1));
        let lines = summary(&e.effects);
        assert!(!lines.contains(&"storage-red Firing->Resolved".to_string()));
        let e = m.evaluate(
            later.saturating_add(Duration::from_secs(300)),
            &gauges(100),
            &stats,
            &PackTally::new(1, 1),
        );
        let lines = summary(&e.effects);
        assert!(
            lines.contains(&"storage-red Firing->Resolved".to_string()),
            "{lines:?}"
        );
        assert!(
            lines.contains(&"pack-deny-anomaly[billing] Firing->Resolved".to_string()),
            "{lines:?}"
        );
    }

    #[test]
    fn invalid_configuration_is_refused() {
        let mut cfg = ScaleConfig::default();
        cfg.levels.storage_pct.red = 50.0;
        let err = ScaleMonitor::new(cfg, 1).unwrap_err();
        assert!(
            err.to_string().starts_with("scale.levels.storage_pct"),
            "{err}"
        );
    }
}
