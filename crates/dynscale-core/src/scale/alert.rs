//! Alert rules and their state machine: inactive → pending → firing → resolved,
//! with `for` and `keep_firing_for` as in Prometheus.
//!
//! [`step`] is pure: the server (through [`super::ScaleMonitor`]) calls it at every
//! evaluation with whether the rule's condition holds, persists the
//! [`Transition`]s as history and sends the [`Notification`]s to the rule's owner.
//!
//! Timing, at evaluation instants only:
//! - A condition that starts to hold makes the alert pending; it fires at the first
//!   evaluation at least `for` after that (at once when `for` is zero). A pending
//!   alert whose condition stops holding goes back to inactive.
//! - A firing alert whose condition stops holding keeps firing until an evaluation
//!   at least `keep_firing_for` after the first one where it did not hold (measured,
//!   as in Prometheus, from that first evaluation); holding again in between resets
//!   the wait. Then it is resolved.
//! - Resolved lasts until the next evaluation: inactive if the condition still does
//!   not hold, a new pending (or firing) episode if it does.
//! - While firing, the owner is reminded every `repeat_every`, if set. Every
//!   notification of an episode carries the same response deadline: the moment it
//!   started firing plus the rule's `respond_within`.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::burn::BurnTier;
use super::signal::{Level, Signal};
use super::time::UnixMs;

/// What a rule watches.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Condition {
    /// The signal's level is at least `at_least`.
    Level { signal: Signal, at_least: Level },
    /// The signal's value (in its unit) is above `value`.
    Above { signal: Signal, value: f64 },
    /// The signal's value (in its unit) is below `value`.
    Below { signal: Signal, value: f64 },
    /// The decision SLO burns at this tier's rate over both its windows.
    BurnRate { tier: BurnTier },
    /// Storage is predicted full within the forecast horizon.
    StorageForecast,
    /// A pack's deny rate is anomalous; one alert instance per pack.
    DenyRateAnomaly,
}

impl fmt::Display for Condition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Condition::Level { signal, at_least } => write!(f, "{signal} level ≥ {at_least}"),
            Condition::Above { signal, value } => {
                write!(f, "{signal} > {value} {}", signal.unit())
            }
            Condition::Below { signal, value } => {
                write!(f, "{signal} < {value} {}", signal.unit())
            }
            Condition::BurnRate { tier } => write!(f, "decision SLO burn rate ({})", tier.as_str()),
            Condition::StorageForecast => f.write_str("storage predicted full within the horizon"),
            Condition::DenyRateAnomaly => f.write_str("pack deny rate anomalous"),
        }
    }
}

/// Who is told and how soon they must respond.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    /// The team or person responsible (free text the webhook receiver understands).
    pub owner: String,
    /// How long the owner has to respond once the alert fires.
    pub respond_within: Duration,
    /// How often the owner is reminded while the alert fires; `None`: never.
    pub repeat_every: Option<Duration>,
}

/// A checked alert rule.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AlertRule {
    pub name: String,
    pub condition: Condition,
    /// How long the condition must hold before the alert fires.
    pub for_: Duration,
    /// How long the alert keeps firing after the condition stops holding.
    pub keep_firing_for: Duration,
    /// The alert's level (severity).
    pub level: Level,
    pub route: Route,
}

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum AlertState {
    #[default]
    Inactive,
    /// The condition holds since `since`, not yet for `for`.
    Pending { since: UnixMs },
    /// Firing since `since`. `clear_since` is the first evaluation since the
    /// condition last held, if it no longer does; `notified_at` the last notice.
    Firing {
        since: UnixMs,
        clear_since: Option<UnixMs>,
        notified_at: UnixMs,
    },
    /// Resolved at `at`, after firing.
    Resolved { at: UnixMs },
}

impl AlertState {
    /// The state's phase, without its times.
    pub fn phase(&self) -> Phase {
        match self {
            AlertState::Inactive => Phase::Inactive,
            AlertState::Pending { .. } => Phase::Pending,
            AlertState::Firing { .. } => Phase::Firing,
            AlertState::Resolved { .. } => Phase::Resolved,
        }
    }
}

/// An alert state without its times, as transition records name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    Inactive,
    Pending,
    Firing,
    Resolved,
}

/// What one evaluation saw of a rule's condition.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Observation {
    pub holds: bool,
    /// The value the condition looked at (signal value, burn rate, hours to full,
    /// z-score), for the record.
    pub value: Option<f64>,
}

/// A change of an alert's phase, for the persisted history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Transition {
    pub alert: String,
    /// The pack of a per-pack alert.
    pub instance: Option<String>,
    pub from: Phase,
    pub to: Phase,
    pub at: UnixMs,
    pub level: Level,
    pub value: Option<f64>,
}

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NotificationKind {
    /// The alert started firing.
    Firing,
    /// Reminder: still firing after `repeat_every`.
    Repeat,
    /// The alert stopped firing.
    Resolved,
}

/// A message for the alert's owner; the server delivers it (webhook).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Notification {
    pub alert: String,
    pub instance: Option<String>,
    pub kind: NotificationKind,
    pub level: Level,
    pub owner: String,
    /// The rule's condition in words.
    pub condition: String,
    pub value: Option<f64>,
    /// When this episode started firing.
    pub firing_since: UnixMs,
    /// The owner must respond by then.
    pub respond_by: UnixMs,
    /// When the notification was produced.
    pub at: UnixMs,
}

/// What [`step`] asks the server to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Effect {
    /// Persist in the alert history.
    Record(Transition),
    /// Deliver to the owner.
    Notify(Notification),
}

/// Advances one alert of `rule` (the pack `instance` for per-pack rules) from
/// `state` given what the evaluation at `now` saw.
pub fn step(
    rule: &AlertRule,
    instance: Option<&str>,
    state: &AlertState,
    seen: Observation,
    now: UnixMs,
) -> (AlertState, Vec<Effect>) {
    let mut effects = Vec::new();
    let record = |effects: &mut Vec<Effect>, from: Phase, to: Phase| {
        effects.push(Effect::Record(Transition {
            alert: rule.name.clone(),
            instance: instance.map(str::to_owned),
            from,
            to,
            at: now,
            level: rule.level,
            value: seen.value,
        }));
    };
    let notify = |effects: &mut Vec<Effect>, kind: NotificationKind, since: UnixMs| {
        effects.push(Effect::Notify(Notification {
            alert: rule.name.clone(),
            instance: instance.map(str::to_owned),
            kind,
            level: rule.level,
            owner: rule.route.owner.clone(),
            condition: rule.condition.to_string(),
            value: seen.value,
            firing_since: since,
            respond_by: since.saturating_add(rule.route.respond_within),
            at: now,
        }));
    };
    let fire = |effects: &mut Vec<Effect>, from: Phase| {
        record(effects, from, Phase::Firing);
        notify(effects, NotificationKind::Firing, now);
        AlertState::Firing {
            since: now,
            clear_since: None,
            notified_at: now,
        }
    };
    let next = match (*state, seen.holds) {
        (AlertState::Inactive | AlertState::Resolved { .. }, false) => AlertState::Inactive,
        (AlertState::Inactive | AlertState::Resolved { .. }, true) => {
            let from = state.phase();
            if rule.for_.is_zero() {
                fire(&mut effects, from)
            } else {
                record(&mut effects, from, Phase::Pending);
                AlertState::Pending { since: now }
            }
        }
        (AlertState::Pending { since }, true) => {
            if now.saturating_since(since) >= rule.for_ {
                fire(&mut effects, Phase::Pending)
            } else {
                AlertState::Pending { since }
            }
        }
        (AlertState::Pending { .. }, false) => {
            record(&mut effects, Phase::Pending, Phase::Inactive);
            AlertState::Inactive
        }
        (
            AlertState::Firing {
                since,
                clear_since,
                notified_at,
            },
            holds,
        ) => {
            let clear_since = if holds {
                None
            } else {
                clear_since.or(Some(now))
            };
            match clear_since {
                Some(c) if now.saturating_since(c) >= rule.keep_firing_for => {
                    record(&mut effects, Phase::Firing, Phase::Resolved);
                    notify(&mut effects, NotificationKind::Resolved, since);
                    AlertState::Resolved { at: now }
                }
                _ => {
                    let remind = rule
                        .route
                        .repeat_every
                        .is_some_and(|every| now.saturating_since(notified_at) >= every);
                    let notified_at = if remind {
                        notify(&mut effects, NotificationKind::Repeat, since);
                        now
                    } else {
                        notified_at
                    };
                    AlertState::Firing {
                        since,
                        clear_since,
                        notified_at,
                    }
                }
            }
        }
    };
    (next, effects)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(for_s: u64, keep_s: u64, repeat_s: Option<u64>) -> AlertRule {
        AlertRule {
            name: "storage-red".into(),
            condition: Condition::Level {
                signal: Signal::Storage,
                at_least: Level::Red,
            },
            for_: Duration::from_secs(for_s),
            keep_firing_for: Duration::from_secs(keep_s),
            level: Level::Red,
            route: Route {
                owner: "storage-oncall".into(),
                respond_within: Duration::from_secs(3600),
                repeat_every: repeat_s.map(Duration::from_secs),
            },
        }
    }

    /// Runs `rule` over (second, holds) evaluations; returns the phase after each
    /// and every effect as a short string: "P" for a transition to pending etc.,
    /// "!F" / "!R" / "!r" for firing / repeat / resolved notifications.
    fn run(rule: &AlertRule, seq: &[(u64, bool)]) -> (Vec<Phase>, Vec<String>) {
        let mut state = AlertState::Inactive;
        let mut phases = Vec::new();
        let mut log = Vec::new();
        for &(s, holds) in seq {
            let (next, effects) = step(
                rule,
                None,
                &state,
                Observation { holds, value: None },
                UnixMs(s * 1000),
            );
            for e in effects {
                log.push(match e {
                    Effect::Record(t) => format!(
                        "{s}:{}",
                        match t.to {
                            Phase::Inactive => "I",
                            Phase::Pending => "P",
                            Phase::Firing => "F",
                            Phase::Resolved => "R",
                        }
                    ),
                    Effect::Notify(n) => format!(
                        "{s}:!{}",
                        match n.kind {
                            NotificationKind::Firing => "F",
                            NotificationKind::Repeat => "r",
                            NotificationKind::Resolved => "R",
                        }
                    ),
                });
            }
            phases.push(next.phase());
            state = next;
        }
        (phases, log)
    }

    use Phase::{Firing as F, Inactive as I, Pending as P, Resolved as R};

    #[test]
    fn for_and_keep_firing_for_edge_cases() {
        // (name, for, keep, evaluations every 10 s as (second, holds), phases, effects)
        let t = |s: u64| (s, true);
        let f = |s: u64| (s, false);
        #[allow(clippy::type_complexity)]
        let table: Vec<(&str, u64, u64, Vec<(u64, bool)>, Vec<Phase>, &str)> = vec![
            (
                "for 0 fires at once, keep 0 resolves at once",
                0,
                0,
                vec![t(0), f(10), f(20)],
                vec![F, R, I],
                "0:F 0:!F 10:R 10:!R",
            ),
            (
                "fires exactly when for has elapsed",
                30,
                0,
                vec![t(0), t(10), t(20), t(30), f(40)],
                vec![P, P, P, F, R],
                "0:P 30:F 30:!F 40:R 40:!R",
            ),
            (
                "pending that stops holding goes back to inactive, no notice",
                30,
                0,
                vec![t(0), t(10), f(20), t(30), t(40)],
                vec![P, P, I, P, P],
                "0:P 20:I 30:P",
            ),
            (
                "for is measured from the first holding evaluation of the episode",
                15,
                0,
                vec![t(0), t(10), t(20)],
                vec![P, P, F],
                "0:P 20:F 20:!F",
            ),
            (
                "keep_firing_for counts from the first non-holding evaluation",
                0,
                20,
                vec![t(0), f(10), f(20), f(30), f(40)],
                vec![F, F, F, R, I],
                "0:F 0:!F 30:R 30:!R",
            ),
            (
                "holding again during keep_firing_for resets the wait",
                0,
                20,
                vec![t(0), f(10), t(20), f(30), f(40), f(50)],
                vec![F, F, F, F, F, R],
                "0:F 0:!F 50:R 50:!R",
            ),
            (
                "a new episode right after resolved goes through pending",
                20,
                0,
                vec![t(0), t(20), f(30), t(40), t(50), t(60)],
                vec![P, F, R, P, P, F],
                "0:P 20:F 20:!F 30:R 30:!R 40:P 60:F 60:!F",
            ),
            (
                "resolved with for 0 re-fires immediately",
                0,
                0,
                vec![t(0), f(10), t(20)],
                vec![F, R, F],
                "0:F 0:!F 10:R 10:!R 20:F 20:!F",
            ),
        ];
        for (name, for_s, keep_s, seq, phases, effects) in table {
            let (got_phases, got_effects) = run(&rule(for_s, keep_s, None), &seq);
            assert_eq!(got_phases, phases, "{name}");
            assert_eq!(got_effects.join(" "), effects, "{name}");
        }
    }

    #[test]
    fn reminders_repeat_while_firing_and_keep_the_deadline() {
        let r = rule(0, 30, Some(60));
        let seq: Vec<(u64, bool)> = (0..=20).map(|i| (i * 10, i < 15)).collect();
        let (_, effects) = run(&r, &seq);
        // Fires at 0; reminders at 60 and 120; stops holding at 150, resolved at 180.
        assert_eq!(effects.join(" "), "0:F 0:!F 60:!r 120:!r 180:R 180:!R");
        // A reminder during keep_firing_for is still sent (the alert still fires).
        let (_, effects) = run(
            &rule(0, 100, Some(60)),
            &[(0, true), (30, false), (60, false)],
        );
        assert_eq!(effects.join(" "), "0:F 0:!F 60:!r");

        let mut state = AlertState::Inactive;
        let mut deadlines = Vec::new();
        for &(s, holds) in &seq {
            let (next, effects) = step(
                &r,
                Some("x"),
                &state,
                Observation {
                    holds,
                    value: Some(99.5),
                },
                UnixMs(1_000_000 + s * 1000),
            );
            for e in effects {
                if let Effect::Notify(n) = e {
                    assert_eq!(n.owner, "storage-oncall");
                    assert_eq!(n.instance.as_deref(), Some("x"));
                    assert_eq!(n.level, Level::Red);
                    assert_eq!(n.condition, "storage level ≥ RED");
                    deadlines.push(n.respond_by);
                }
            }
            state = next;
        }
        assert_eq!(deadlines.len(), 4);
        assert!(
            deadlines
                .iter()
                .all(|&d| d == UnixMs(1_000_000 + 3_600_000))
        );
    }

    #[test]
    fn states_round_trip_for_persistence() {
        let s = AlertState::Firing {
            since: UnixMs(5),
            clear_since: Some(UnixMs(9)),
            notified_at: UnixMs(7),
        };
        let json = serde_json::to_string(&s).unwrap();
        assert_eq!(
            json,
            r#"{"state":"firing","since":5,"clear_since":9,"notified_at":7}"#
        );
        assert_eq!(serde_json::from_str::<AlertState>(&json).unwrap(), s);
    }
}
