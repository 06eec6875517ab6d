//! A traffic simulator for the rollout state machine, shared by the rollout tests
//! and `benches/rollout_sim.rs`. Randomness comes from the caller's seeded
//! generator; the state machine itself has none.
//!
//! Every tick, `requests_per_sec × tick` requests arrive from a fixed population of
//! agents. The current routing sends each to an arm (by the agent's real bucket);
//! the arm's model draws an evaluation error, a deny, and, for allowed actions,
//! agent feedback (failure or success, latency). The batch goes to `step` as
//! `Event::Measured`; effects update the routing until the rollout finishes.

#![allow(dead_code)]

use std::time::Duration;

use dynscale_core::decision::Outcome;
use dynscale_core::ids::AgentId;
use dynscale_core::rollout::bucket::{Bucket, arm_of, bucket};
use dynscale_core::rollout::{
    Arm, BasisPoints, Cause, Effect, Event, Finish, Measurements, Phase, Record, Rollout,
    RolloutSalt, Routing, Stamped, Start, UnixMillis, Verdict, start, step,
};
use rand::Rng;

/// How one version behaves.
#[derive(Debug, Clone, Copy)]
pub struct ArmModel {
    /// Probability that an evaluation fails.
    pub eval_error: f64,
    /// Probability that a decision denies.
    pub deny: f64,
    /// Probability that an allowed action fails (agent feedback).
    pub failure: f64,
    /// Action latency: `latency_floor_ms + Exp(latency_mean_extra_ms)`.
    pub latency_floor_ms: f64,
    pub latency_mean_extra_ms: f64,
}

impl ArmModel {
    /// A healthy version: 0.1 % evaluation errors, 10 % denies, 5 % failed
    /// actions, latency 80 ms + Exp(mean 40 ms).
    pub const BASELINE: ArmModel = ArmModel {
        eval_error: 0.001,
        deny: 0.10,
        failure: 0.05,
        latency_floor_ms: 80.0,
        latency_mean_extra_ms: 40.0,
    };
}

/// A simulated rollout's traffic.
#[derive(Debug, Clone)]
pub struct Scenario {
    pub control: ArmModel,
    pub candidate: ArmModel,
    pub requests_per_sec: u32,
    pub agents: u32,
    pub tick: Duration,
    /// Give up (and report no finish) after this long.
    pub max_time: Duration,
}

impl Scenario {
    /// Equal arms at the baseline, 100 requests/s from 5 000 agents, 10 s ticks.
    pub fn aa() -> Self {
        Scenario {
            control: ArmModel::BASELINE,
            candidate: ArmModel::BASELINE,
            requests_per_sec: 100,
            agents: 5_000,
            tick: Duration::from_secs(10),
            max_time: Duration::from_secs(3 * 3600),
        }
    }
}

/// How a simulated rollout went.
#[derive(Debug, Clone)]
pub struct SimResult {
    pub finish: Option<Finish>,
    /// The final record (verdict and findings), if the rollout finished.
    pub last: Option<Record>,
    /// Simulated time from start to finish (or to giving up).
    pub elapsed: Duration,
    /// The largest candidate share that was routed.
    pub max_share: BasisPoints,
    /// Candidate decisions and feedback reports at the end.
    pub candidate_decisions: u64,
    pub candidate_feedback: u64,
    pub state: Rollout,
    /// Every event stepped, for replay checks.
    pub events: Vec<Stamped>,
}

impl SimResult {
    /// Whether it rolled back because of a statistic (not a hard trigger).
    pub fn rolled_back_by_statistic(&self) -> bool {
        matches!(
            self.last,
            Some(Record {
                verdict: Verdict::Rollback {
                    cause: Cause::Statistic { .. }
                },
                ..
            })
        )
    }

    /// Whether it rolled back because of a hard trigger.
    pub fn rolled_back_by_trigger(&self) -> bool {
        matches!(
            self.last,
            Some(Record {
                verdict: Verdict::Rollback {
                    cause: Cause::Trigger { .. }
                },
                ..
            })
        )
    }
}

fn exp_ms(rng: &mut impl Rng, mean: f64) -> f64 {
    if mean <= 0.0 {
        return 0.0;
    }
    let u: f64 = rng.random();
    -(1.0 - u).ln() * mean
}

fn serve(rng: &mut impl Rng, model: &ArmModel, m: &mut Measurements, arm: Arm) -> Option<Outcome> {
    let stats = m.arm_mut(arm);
    if rng.random_bool(model.eval_error) {
        stats.record_error(false);
        return None;
    }
    let outcome = if rng.random_bool(model.deny) {
        Outcome::Deny
    } else {
        Outcome::Allow
    };
    stats.record_decision(outcome, Duration::from_micros(40));
    Some(outcome)
}

fn feedback(rng: &mut impl Rng, model: &ArmModel, m: &mut Measurements, arm: Arm) {
    let failed = rng.random_bool(model.failure);
    let ms = model.latency_floor_ms + exp_ms(rng, model.latency_mean_extra_ms);
    let result = if failed {
        dynscale_core::rollout::FeedbackResult::Failure
    } else {
        dynscale_core::rollout::FeedbackResult::Success
    };
    m.arm_mut(arm)
        .record_feedback(result, Duration::from_micros((ms * 1000.0) as u64));
}

/// Runs one rollout of `begin` under `scenario`, starting at `t0`.
pub fn run(begin: &Start, scenario: &Scenario, t0: UnixMillis, rng: &mut impl Rng) -> SimResult {
    let buckets: Vec<Bucket> = (0..scenario.agents)
        .map(|i| bucket(&begin.salt, &AgentId::new(format!("agent-{i}"))))
        .collect();
    let (mut state, effects) = start(begin, t0).expect("valid simulation start");
    let mut routing = state.routing();
    let mut max_share = BasisPoints::ZERO;
    let mut last = None;
    let apply = |effects: Vec<Effect>, routing: &mut Routing, last: &mut Option<Record>| {
        for e in effects {
            match e {
                Effect::Route(r) => *routing = r,
                Effect::Record(r) => *last = Some(r),
                Effect::Promote | Effect::Rollback => {}
            }
        }
    };
    apply(effects, &mut routing, &mut last);
    let per_tick = u64::from(scenario.requests_per_sec) * scenario.tick.as_secs();
    let mut now = t0;
    let mut events = Vec::new();
    while !state.is_finished() && now.saturating_since(t0) < scenario.max_time {
        now = now.saturating_add(scenario.tick);
        let mut batch = Measurements::default();
        for _ in 0..per_tick {
            let b = buckets[rng.random_range(0..buckets.len())];
            let enforced = match routing {
                Routing::Split { candidate_share } => {
                    max_share = max_share.max(candidate_share);
                    arm_of(b, candidate_share)
                }
                Routing::Switched | Routing::Promoted => {
                    max_share = BasisPoints::ALL;
                    Arm::Candidate
                }
                Routing::Previous | Routing::Shadow => Arm::Control,
            };
            let model = match enforced {
                Arm::Control => &scenario.control,
                Arm::Candidate => &scenario.candidate,
            };
            let outcome = serve(rng, model, &mut batch, enforced);
            if routing == Routing::Shadow
                && let Some(active) = outcome
            {
                let shadow = serve(rng, &scenario.candidate, &mut batch, Arm::Candidate);
                let id = uuid::Uuid::from_u128(u128::from(rng.random::<u64>()));
                match shadow {
                    Some(candidate) => batch.shadow.record(id, active, candidate),
                    None => batch.shadow.record_candidate_error(id),
                }
            }
            if outcome.is_some_and(Outcome::is_allowed) {
                feedback(rng, model, &mut batch, enforced);
            }
        }
        let event = Event::Measured(Box::new(batch));
        let (next, effects) = step(&state, &event, now).expect("measurements are always accepted");
        events.push(Stamped { at: now, event });
        state = next;
        apply(effects, &mut routing, &mut last);
    }
    let finish = match state.phase {
        Phase::Done { finish, .. } => Some(finish),
        _ => None,
    };
    SimResult {
        finish,
        last,
        elapsed: now.saturating_since(t0),
        max_share,
        candidate_decisions: state.totals.candidate.decisions,
        candidate_feedback: state.totals.candidate.feedback.total(),
        state,
        events,
    }
}

/// A canary start with the default analysis and the given step settings.
pub fn canary(salt: &str, step_duration: Duration, min_samples: u64) -> Start {
    let steps = [5, 25, 50, 100]
        .into_iter()
        .map(|p| BasisPoints::from_percent(p).expect("static percentages"))
        .collect();
    Start {
        salt: RolloutSalt::new(salt).expect("simulation salts have no NUL"),
        plan: dynscale_core::rollout::Plan::Canary {
            steps,
            step_duration,
            min_samples,
        },
        config: Default::default(),
    }
}
