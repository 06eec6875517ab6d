//! The rollout state machine: `step(state, event, now) -> (state, effects)`.
//!
//! The server owns one [`Rollout`] per candidate version. It stores every accepted
//! [`Event`] (with its `now`) and carries out the returned [`Effect`]s; after a
//! restart it rebuilds the state with [`replay`] from the stored [`Start`] and
//! events, which yields exactly the state it had, and publishes
//! [`Rollout::routing`]. Nothing here reads a clock or draws a random number, and
//! the state holds only integers, ids and the configuration, so replay is exact.
//!
//! Phases:
//!
//! ```text
//! canary:      Canary{0} → Canary{1} → … → Done(Promoted)
//! blue-green:  PrePromotion (shadow sample, checks) → Switched (previous warm,
//!              watched for keepWarm) → Done(Promoted)
//! shadow:      Shadow → Done(Promoted | Aborted) by an operator
//! immediate:   Done(Promoted) at start
//! any phase:   hard trigger or regression → Done(RolledBack)
//!              (shadow strategy: hard triggers only; it never enforces)
//!              Command::Abort → Done(Aborted); Command::Promote → Done(Promoted)
//! ```
//!
//! Pausing stops advancing and promotion (a switched blue-green stays switched with
//! the previous version warm) but not rollback: a regression found while paused
//! still rolls back.

use serde::{Deserialize, Serialize};

use super::analysis::{
    AnalysisConfig, ConfigError, Evidence, Finding, LatencyWindow, TriggerHit, WindowCounts,
    findings, hard_trigger, weigh,
};
use super::bucket::{Arm, BasisPoints, RolloutSalt, assign};
use super::instant::UnixMillis;
use super::measure::{ArmStats, Measurements};
use super::plan::Plan;
use crate::ids::AgentId;

/// How long critical errors count towards the per-minute trigger.
const CRITICAL_WINDOW_MS: u64 = 60_000;

/// Everything needed to begin a rollout; stored once, first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Start {
    pub salt: RolloutSalt,
    pub plan: Plan,
    #[serde(default)]
    pub config: AnalysisConfig,
}

/// What happens to a rollout.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "data")]
pub enum Event {
    /// A batch of observations drained from the decision path.
    Measured(Box<Measurements>),
    /// Time passed (run timers and analysis without new data).
    Tick,
    /// An operator's command.
    Command(Command),
}

/// Manual controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Command {
    /// Make the candidate the version in force now, skipping what remains.
    Promote,
    /// Stop advancing (rollback on regression still applies).
    Pause,
    /// Continue after a pause.
    Resume,
    /// Return to the previous version now.
    Abort,
}

/// An event with the time it happened, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamped {
    pub at: UnixMillis,
    pub event: Event,
}

/// Which version serves which traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "mode")]
pub enum Routing {
    /// Only the version in force before the rollout.
    Previous,
    /// The previous version enforces; the candidate is evaluated beside it on all
    /// traffic and only compared.
    Shadow,
    /// Agents whose bucket is below `candidate_share` get the candidate.
    Split { candidate_share: BasisPoints },
    /// The candidate enforces on all traffic; the previous version stays warm for
    /// an instant revert.
    Switched,
    /// Only the candidate; the previous version may be dropped.
    Promoted,
}

impl Routing {
    /// The arm whose decision is enforced for `agent`.
    pub fn enforced_arm(&self, salt: &RolloutSalt, agent: &AgentId) -> Arm {
        match self {
            Routing::Previous | Routing::Shadow => Arm::Control,
            Routing::Split { candidate_share } => assign(salt, agent, *candidate_share),
            Routing::Switched | Routing::Promoted => Arm::Candidate,
        }
    }
}

/// What the server must do after a step, in order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "type", content = "data")]
pub enum Effect {
    /// Publish this routing (a snapshot swap).
    Route(Routing),
    /// The candidate is final: serve only it and release the previous version.
    Promote,
    /// The candidate failed or was aborted: serve only the previous version and
    /// release the candidate.
    Rollback,
    /// Append this to the audit log.
    Record(Record),
}

/// An audit record of a decision about the rollout, with the statistics behind it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    pub at: UnixMillis,
    /// The phase after the step.
    pub phase: Phase,
    /// The operator command that caused the step, if one did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<Command>,
    pub verdict: Verdict,
    /// Evidence per tested metric at the time.
    pub findings: Vec<Finding>,
}

/// The verdict of one analysis.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "verdict")]
pub enum Verdict {
    /// Stay in the current phase.
    Hold { reason: HoldReason },
    /// Nothing crossed a threshold, but the evidence against the candidate is too
    /// high to move on.
    Inconclusive { finding: Finding },
    /// Move the candidate to a larger share (`100%` for the blue-green switch).
    Advance { share: BasisPoints },
    /// Make the candidate final.
    Promote { by: Actor },
    /// Return to the previous version.
    Rollback { cause: Cause },
}

/// Who decided a promotion.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Actor {
    /// The plan itself (`immediate`).
    Plan,
    /// The analysis: every step passed.
    Analysis,
    /// An operator's `promote`.
    Operator,
}

/// Why a rollout holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason")]
pub enum HoldReason {
    /// Paused by an operator or after a long inconclusive stretch.
    Paused,
    /// The step's minimum duration has not passed.
    StepTime { remaining_ms: u64 },
    /// Not enough data: an arm has fewer observations than the step needs.
    NotEnoughData { arm: Arm, have: u64, need: u64 },
    /// Blue-green: the post-promotion watch is running.
    Watching { remaining_ms: u64 },
    /// Shadow strategy: waiting for an operator to promote or abort.
    AwaitingOperator,
    /// The rollout has finished.
    Finished,
}

/// What caused a rollback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "by")]
pub enum Cause {
    /// A sequential test crossed its threshold.
    Statistic { finding: Finding },
    /// A hard trigger fired.
    Trigger { hit: TriggerHit },
    /// An operator's `abort`.
    Operator,
}

/// How a rollout ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Finish {
    Promoted,
    RolledBack,
    Aborted,
}

/// Where a rollout is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "phase")]
pub enum Phase {
    /// Shadow strategy: comparing only.
    Shadow,
    /// Blue-green before the switch: shadow sample and checks.
    PrePromotion,
    /// Canary at `steps[step]`.
    Canary { step: usize },
    /// Blue-green after the switch, previous version warm.
    Switched { at: UnixMillis },
    /// Over.
    Done { finish: Finish, at: UnixMillis },
}

/// Who paused a rollout.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PausedBy {
    Operator,
    /// The evidence stayed inconclusive for the configured timeout.
    Inconclusive,
}

/// A pause in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pause {
    pub at: UnixMillis,
    pub by: PausedBy,
}

/// Why an event was refused (the state is unchanged; the server should not store
/// the event).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    #[error("the rollout has already finished ({finish:?}); `{command:?}` does not apply")]
    Finished { command: Command, finish: Finish },
    #[error("the rollout is already paused")]
    AlreadyPaused,
    #[error("the rollout is not paused")]
    NotPaused,
}

/// Why stored events do not rebuild a rollout.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReplayError {
    #[error("the stored start is invalid: {0}")]
    Start(#[from] ConfigError),
    #[error("stored event {index} was refused: {source}")]
    Event { index: usize, source: StepError },
}

/// A rollout's whole state. Serialisable; equal states behave identically.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    pub salt: RolloutSalt,
    pub plan: Plan,
    pub config: AnalysisConfig,
    pub started_at: UnixMillis,
    /// The latest `now` seen; later events earlier than it are treated as at it.
    pub updated_at: UnixMillis,
    pub phase: Phase,
    pub paused: Option<Pause>,
    /// When the current analysis window (canary step, pre-promotion, watch) began.
    pub window_started_at: UnixMillis,
    /// Everything observed during the rollout.
    pub totals: Measurements,
    /// What was observed in the current window.
    pub window: Measurements,
    /// Blue-green: the control arm as measured before the switch, the reference
    /// of the watch.
    pub baseline: Option<ArmStats>,
    /// The counts of finished windows, whose evidence carries forward.
    pub closed: Vec<WindowCounts>,
    /// The current window's latency threshold, once calibrated.
    pub latency: Option<LatencyWindow>,
    /// Candidate critical errors per batch within the last minute.
    pub critical: Vec<(UnixMillis, u64)>,
    /// The node's utilization in the latest batch.
    pub utilization: Option<BasisPoints>,
    /// Since when the evidence has been inconclusive at a point where the rollout
    /// could otherwise have moved on.
    pub inconclusive_since: Option<UnixMillis>,
}

/// The current verdict and evidence, for a status page.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Status {
    pub phase: Phase,
    pub routing: Routing,
    pub paused: Option<Pause>,
    pub verdict: Verdict,
    pub findings: Vec<Finding>,
}

/// Begins a rollout.
pub fn start(start: &Start, now: UnixMillis) -> Result<(Rollout, Vec<Effect>), ConfigError> {
    start.config.check()?;
    let mut r = Rollout {
        salt: start.salt.clone(),
        plan: start.plan.clone(),
        config: start.config.clone(),
        started_at: now,
        updated_at: now,
        phase: Phase::Shadow,
        paused: None,
        window_started_at: now,
        totals: Measurements::default(),
        window: Measurements::default(),
        baseline: None,
        closed: Vec::new(),
        latency: None,
        critical: Vec::new(),
        utilization: None,
        inconclusive_since: None,
    };
    let mut effects = Vec::new();
    match &start.plan {
        Plan::Immediate => r.finish_with(
            Verdict::Promote { by: Actor::Plan },
            now,
            None,
            Vec::new(),
            &mut effects,
        ),
        Plan::Shadow => effects.push(Effect::Route(Routing::Shadow)),
        Plan::BlueGreen { .. } => {
            r.phase = Phase::PrePromotion;
            effects.push(Effect::Route(Routing::Shadow));
        }
        Plan::Canary { steps, .. } => match steps.first() {
            Some(share) if *share < BasisPoints::ALL => {
                r.phase = Phase::Canary { step: 0 };
                effects.push(Effect::Route(Routing::Split {
                    candidate_share: *share,
                }));
            }
            _ => r.finish_with(
                Verdict::Promote { by: Actor::Plan },
                now,
                None,
                Vec::new(),
                &mut effects,
            ),
        },
    }
    Ok((r, effects))
}

/// Applies one event at `now`.
pub fn step(
    state: &Rollout,
    event: &Event,
    now: UnixMillis,
) -> Result<(Rollout, Vec<Effect>), StepError> {
    if let Phase::Done { finish, .. } = state.phase {
        return match event {
            Event::Command(command) => Err(StepError::Finished {
                command: *command,
                finish,
            }),
            Event::Measured(_) | Event::Tick => Ok((state.clone(), Vec::new())),
        };
    }
    let mut next = state.clone();
    let now = now.max(state.updated_at);
    next.updated_at = now;
    let mut effects = Vec::new();
    let command = match event {
        Event::Measured(m) => {
            next.absorb(m, now);
            None
        }
        Event::Tick => None,
        Event::Command(c) => Some(*c),
    };
    match command {
        Some(Command::Promote) => {
            let f = next.assess(now).1;
            next.finish_with(
                Verdict::Promote {
                    by: Actor::Operator,
                },
                now,
                command,
                f,
                &mut effects,
            );
            return Ok((next, effects));
        }
        Some(Command::Abort) => {
            let f = next.assess(now).1;
            next.finish_with(
                Verdict::Rollback {
                    cause: Cause::Operator,
                },
                now,
                command,
                f,
                &mut effects,
            );
            return Ok((next, effects));
        }
        Some(Command::Pause) => {
            if next.paused.is_some() {
                return Err(StepError::AlreadyPaused);
            }
            next.paused = Some(Pause {
                at: now,
                by: PausedBy::Operator,
            });
        }
        Some(Command::Resume) => {
            if next.paused.is_none() {
                return Err(StepError::NotPaused);
            }
            next.paused = None;
            next.inconclusive_since = None;
        }
        None => {}
    }
    next.evaluate(now, command, &mut effects);
    Ok((next, effects))
}

/// Rebuilds a rollout from its stored start and events.
pub fn replay<'a>(
    begin: &Start,
    started_at: UnixMillis,
    events: impl IntoIterator<Item = &'a Stamped>,
) -> Result<Rollout, ReplayError> {
    let (mut state, _) = start(begin, started_at)?;
    for (index, e) in events.into_iter().enumerate() {
        state = step(&state, &e.event, e.at)
            .map_err(|source| ReplayError::Event { index, source })?
            .0;
    }
    Ok(state)
}

impl Rollout {
    /// Which version serves which traffic now.
    pub fn routing(&self) -> Routing {
        match self.phase {
            Phase::Shadow | Phase::PrePromotion => Routing::Shadow,
            Phase::Canary { step } => Routing::Split {
                candidate_share: self.share_at(step).unwrap_or(BasisPoints::ALL),
            },
            Phase::Switched { .. } => Routing::Switched,
            Phase::Done {
                finish: Finish::Promoted,
                ..
            } => Routing::Promoted,
            Phase::Done { .. } => Routing::Previous,
        }
    }

    /// The current verdict and evidence, without changing anything.
    pub fn status(&self, now: UnixMillis) -> Status {
        let mut probe = self.clone();
        let now = now.max(self.updated_at);
        let (verdict, findings) = probe.assess(now);
        Status {
            phase: self.phase,
            routing: self.routing(),
            paused: self.paused,
            verdict,
            findings,
        }
    }

    /// Whether `self`, the state after a step from `before`, differs from it in more
    /// than the time of the last event. An event that changed nothing else need not be
    /// stored: replaying without it gives the same state, since the next event's time
    /// is at least as late.
    pub fn changed_since(&self, before: &Rollout) -> bool {
        self.phase != before.phase
            || self.paused != before.paused
            || self.window_started_at != before.window_started_at
            || self.totals != before.totals
            || self.window != before.window
            || self.baseline != before.baseline
            || self.closed != before.closed
            || self.latency != before.latency
            || self.critical != before.critical
            || self.utilization != before.utilization
            || self.inconclusive_since != before.inconclusive_since
    }

    /// The candidate's critical errors within the last minute, as the trigger counts
    /// them at the last event.
    pub fn critical_last_minute(&self) -> u64 {
        self.critical.iter().map(|(_, n)| n).sum()
    }

    /// Whether the rollout is over.
    pub fn is_finished(&self) -> bool {
        matches!(self.phase, Phase::Done { .. })
    }

    fn share_at(&self, step: usize) -> Option<BasisPoints> {
        match &self.plan {
            Plan::Canary { steps, .. } => steps.get(step).copied(),
            _ => None,
        }
    }

    fn absorb(&mut self, m: &Measurements, now: UnixMillis) {
        self.totals.merge(m);
        self.window.merge(m);
        if m.candidate.critical_errors > 0 {
            self.critical.push((now, m.candidate.critical_errors));
        }
        self.utilization = m.utilization;
    }

    /// The arms the hard triggers compare: cumulative, or since the switch against
    /// the pre-switch baseline.
    pub fn trigger_arms(&self) -> (&ArmStats, &ArmStats) {
        match (&self.phase, &self.baseline) {
            (Phase::Switched { .. }, Some(b)) => (&self.window.candidate, b),
            _ => (&self.totals.candidate, &self.totals.control),
        }
    }

    fn current_window(&self) -> WindowCounts {
        let w = &self.window;
        match (&self.phase, &self.baseline) {
            (Phase::Shadow | Phase::PrePromotion, _) => {
                WindowCounts::shadow(&w.candidate, &w.control, &w.shadow)
            }
            (Phase::Switched { .. }, Some(b)) => {
                WindowCounts::unpaired(&w.candidate, b, self.latency.as_ref())
            }
            _ => WindowCounts::unpaired(&w.candidate, &w.control, self.latency.as_ref()),
        }
    }

    /// Sets the latency threshold of the current window once the control has
    /// enough latency data in it; the window counts from then on.
    fn calibrate_latency(&mut self) {
        let calibrating = matches!(self.phase, Phase::Canary { .. } | Phase::PrePromotion);
        let control = &self.window.control.feedback.latency;
        if calibrating
            && self.latency.is_none()
            && control.count() >= self.config.min_analysis_samples
        {
            self.latency = LatencyWindow::starting_now(
                control,
                &self.window.candidate.feedback.latency,
                control,
            );
        }
    }

    /// Runs the analysis: the verdict and the findings behind it. Mutates only
    /// derived bookkeeping (expired critical errors, latency calibration).
    fn assess(&mut self, now: UnixMillis) -> (Verdict, Vec<Finding>) {
        self.critical
            .retain(|(t, _)| t.0.saturating_add(CRITICAL_WINDOW_MS) > now.0);
        self.calibrate_latency();
        let current = self.current_window();
        let found = findings(&self.config, &self.closed, &current);
        if self.is_finished() {
            return (
                Verdict::Hold {
                    reason: HoldReason::Finished,
                },
                found,
            );
        }
        let critical: u64 = self.critical.iter().map(|(_, n)| n).sum();
        let (candidate, control) = self.trigger_arms();
        if let Some(hit) = hard_trigger(
            &self.config.hard,
            candidate,
            control,
            critical,
            self.utilization,
        ) {
            return (
                Verdict::Rollback {
                    cause: Cause::Trigger { hit },
                },
                found,
            );
        }
        let evidence = weigh(&self.config, &found);
        if self.phase != Phase::Shadow
            && let Evidence::Regression(finding) = &evidence
        {
            return (
                Verdict::Rollback {
                    cause: Cause::Statistic {
                        finding: finding.clone(),
                    },
                },
                found,
            );
        }
        let verdict = self.progress(now, &evidence);
        (verdict, found)
    }

    /// The verdict when nothing calls for a rollback.
    fn progress(&self, now: UnixMillis, evidence: &Evidence) -> Verdict {
        let hold = |reason| Verdict::Hold { reason };
        if self.phase == Phase::Shadow {
            return hold(HoldReason::AwaitingOperator);
        }
        if self.paused.is_some() {
            return hold(HoldReason::Paused);
        }
        let ready = match (&self.plan, self.phase) {
            (
                Plan::Canary {
                    step_duration,
                    min_samples,
                    ..
                },
                Phase::Canary { step },
            ) => {
                let elapsed = now.saturating_since(self.window_started_at);
                if elapsed < *step_duration {
                    let remaining_ms = (*step_duration - elapsed).as_millis();
                    return hold(HoldReason::StepTime {
                        remaining_ms: u64::try_from(remaining_ms).unwrap_or(u64::MAX),
                    });
                }
                for arm in [Arm::Candidate, Arm::Control] {
                    let have = self.window.arm(arm).decisions;
                    if have < *min_samples {
                        return hold(HoldReason::NotEnoughData {
                            arm,
                            have,
                            need: *min_samples,
                        });
                    }
                }
                match self.share_at(step + 1) {
                    Some(share) if share < BasisPoints::ALL => Verdict::Advance { share },
                    _ => Verdict::Promote {
                        by: Actor::Analysis,
                    },
                }
            }
            (Plan::BlueGreen { shadow_samples, .. }, Phase::PrePromotion) => {
                let have = self.window.shadow.compared;
                if have < *shadow_samples {
                    return hold(HoldReason::NotEnoughData {
                        arm: Arm::Candidate,
                        have,
                        need: *shadow_samples,
                    });
                }
                Verdict::Advance {
                    share: BasisPoints::ALL,
                }
            }
            (Plan::BlueGreen { keep_warm, .. }, Phase::Switched { at }) => {
                let until = at.saturating_add(*keep_warm);
                if now < until {
                    return hold(HoldReason::Watching {
                        remaining_ms: until.0 - now.0,
                    });
                }
                Verdict::Promote {
                    by: Actor::Analysis,
                }
            }
            // A phase that does not belong to the plan cannot be built by `start`
            // and `step`; hold rather than guess.
            _ => return hold(HoldReason::AwaitingOperator),
        };
        match evidence {
            Evidence::Suspicious(finding) | Evidence::Regression(finding) => {
                Verdict::Inconclusive {
                    finding: finding.clone(),
                }
            }
            Evidence::Clear => ready,
        }
    }

    /// Assesses and carries out the verdict.
    fn evaluate(&mut self, now: UnixMillis, command: Option<Command>, effects: &mut Vec<Effect>) {
        let (verdict, found) = self.assess(now);
        match verdict {
            Verdict::Rollback { .. } | Verdict::Promote { .. } => {
                self.finish_with(verdict, now, command, found, effects);
            }
            Verdict::Advance { share } => {
                self.inconclusive_since = None;
                self.close_window(now);
                let routing = match self.phase {
                    Phase::Canary { step } => {
                        self.phase = Phase::Canary { step: step + 1 };
                        Routing::Split {
                            candidate_share: share,
                        }
                    }
                    _ => {
                        self.phase = Phase::Switched { at: now };
                        Routing::Switched
                    }
                };
                effects.push(Effect::Route(routing));
                self.record(now, command, verdict, found, effects);
            }
            Verdict::Inconclusive { .. } => {
                let since = *self.inconclusive_since.get_or_insert(now);
                let mut verdict = verdict;
                let mut changed = since == now;
                if now.saturating_since(since) >= self.config.inconclusive_timeout {
                    self.paused = Some(Pause {
                        at: now,
                        by: PausedBy::Inconclusive,
                    });
                    verdict = Verdict::Hold {
                        reason: HoldReason::Paused,
                    };
                    changed = true;
                }
                if changed || command.is_some() {
                    self.record(now, command, verdict, found, effects);
                }
            }
            Verdict::Hold { .. } => {
                self.inconclusive_since = None;
                if command.is_some() {
                    self.record(now, command, verdict, found, effects);
                }
            }
        }
    }

    /// Ends the current window: its counts join the closed ones, the next window
    /// starts empty with a latency threshold from the window just ended.
    fn close_window(&mut self, now: UnixMillis) {
        self.closed.push(self.current_window());
        let ended = std::mem::take(&mut self.window);
        let empty = ArmStats::default();
        if let Phase::PrePromotion = self.phase {
            // The watch compares against the control as it was before the switch,
            // counting latency from the threshold's calibration on.
            self.latency = self.latency.map(|w| LatencyWindow {
                base_candidate: Default::default(),
                ..w
            });
            self.baseline = Some(ended.control);
        } else {
            let reference = &ended.control.feedback.latency;
            self.latency = (reference.count() >= self.config.min_analysis_samples)
                .then(|| {
                    LatencyWindow::starting_now(
                        reference,
                        &empty.feedback.latency,
                        &empty.feedback.latency,
                    )
                })
                .flatten();
        }
        self.window_started_at = now;
    }

    fn finish_with(
        &mut self,
        verdict: Verdict,
        now: UnixMillis,
        command: Option<Command>,
        found: Vec<Finding>,
        effects: &mut Vec<Effect>,
    ) {
        let finish = match (&verdict, command) {
            (Verdict::Promote { .. }, _) => Finish::Promoted,
            (_, Some(Command::Abort)) => Finish::Aborted,
            _ => Finish::RolledBack,
        };
        self.phase = Phase::Done { finish, at: now };
        self.paused = None;
        effects.push(match finish {
            Finish::Promoted => Effect::Promote,
            Finish::RolledBack | Finish::Aborted => Effect::Rollback,
        });
        self.record(now, command, verdict, found, effects);
    }

    fn record(
        &self,
        now: UnixMillis,
        command: Option<Command>,
        verdict: Verdict,
        findings: Vec<Finding>,
        effects: &mut Vec<Effect>,
    ) {
        effects.push(Effect::Record(Record {
            at: now,
            phase: self.phase,
            command,
            verdict,
            findings,
        }));
    }
}
