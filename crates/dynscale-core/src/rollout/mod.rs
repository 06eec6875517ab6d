//! Progressive policy delivery (SPEC §3 "Activation strategies", "Analysis and
//! rollback"): the pure core the server drives.
//!
//! - [`bucket`] — the pinned hash of (salt, agent id) into 10 000 buckets and the
//!   arm of an agent at a share in basis points.
//! - [`plan`] — a document's `activation` as a checked [`Plan`] with defaults.
//! - [`measure`] and [`latency`] — mergeable per-arm accumulators (decisions,
//!   errors, deny rate, latency histogram, agent feedback, shadow diffs with
//!   exemplars), drained by the server into [`Measurements`] batches.
//! - [`evalue`] — the two-sample Beta-Binomial mixture e-value (and its paired
//!   sign-test form), valid under continuous monitoring.
//! - [`analysis`] — metrics, α split, hard triggers, findings and evidence.
//! - [`machine`] — the state machine: [`start`], [`step`] and [`replay`], with
//!   [`Event`]s in and [`Effect`]s out.
//! - [`admit`] — whether a push starts a rollout, one per name, and only beside
//!   rollouts whose scopes cannot share a namespace.
//! - [`recent`] — the bounded map from recent in-rollout decision ids to their arm,
//!   for agent feedback.
//! - [`report`] — the operator's view: samples, statistics against thresholds,
//!   triggers against limits, the next step, the shadow diff.
//!
//! The server's loop, in short: on a push with a rollout strategy, build a
//! [`Start`] (salt, plan, analysis config), store it, call [`start`] and carry out
//! the effects. Every few seconds drain the decision path's accumulators into an
//! [`Event::Measured`] (or send [`Event::Tick`] when idle); on `promote`, `pause`,
//! `resume`, `abort` send [`Event::Command`]. For each event: call [`step`]; if it
//! returns `Ok`, store the event with its `now`, then carry out the effects in
//! order ([`Effect::Route`], [`Effect::Promote`], [`Effect::Rollback`],
//! [`Effect::Record`]). After a restart, [`replay`] the stored start and events and
//! publish [`Rollout::routing`].
//!
//! Nothing here reads a clock or draws random numbers: `now` is passed in, and the
//! simulations in the tests and `benches/rollout_sim.rs` bring their own seeded
//! generator.

pub mod admit;
pub mod analysis;
pub mod bucket;
pub mod evalue;
pub mod instant;
pub mod latency;
pub mod machine;
pub mod measure;
pub mod plan;
pub mod recent;
pub mod report;

pub use admit::{Admission, Busy, BusyReason, Running, admit, check_name_free, salt_for};
pub use analysis::{
    AnalysisConfig, DenyRateTest, HardTriggers, Metric, Trigger, TriggerReading, trigger_readings,
};
pub use bucket::{Arm, BasisPoints, Bucket, RolloutSalt, assign, bucket};
pub use instant::UnixMillis;
pub use machine::{
    Actor, Cause, Command, Effect, Event, Finish, HoldReason, Phase, Record, ReplayError, Rollout,
    Routing, Stamped, Start, Status, StepError, Verdict, replay, start, step,
};
pub use measure::{ArmStats, FeedbackResult, Measurements, ShadowDiff};
pub use plan::{Plan, PlanError};
pub use recent::{ArmTag, FeedbackMiss, RecentDecisions};
pub use report::{NextStep, Report, enforced_share, report};
