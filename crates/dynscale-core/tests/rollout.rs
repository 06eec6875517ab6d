//! The rollout state machine driven by simulated traffic with fixed seeds, plus
//! manual controls, hard triggers, blue-green and shadow runs, and replay.

#[path = "support/rollout_sim.rs"]
mod sim;

use std::time::Duration;

use dynscale_core::decision::Outcome;
use dynscale_core::rollout::{
    AnalysisConfig, Arm, ArmStats, BasisPoints, Cause, Command, Effect, Event, FeedbackResult,
    Finish, HoldReason, Measurements, Phase, Plan, Routing, Start, StepError, Trigger, UnixMillis,
    Verdict, replay, start, step,
};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use sim::{ArmModel, Scenario, canary, run};

const T0: UnixMillis = UnixMillis(1_800_000_000_000);
const STEP: Duration = Duration::from_secs(300);

fn pct(p: u32) -> BasisPoints {
    BasisPoints::from_percent(p).expect("test percentages are at most 100")
}

fn trigger_of(r: &sim::SimResult) -> Option<Trigger> {
    match &r.last.as_ref()?.verdict {
        Verdict::Rollback {
            cause: Cause::Trigger { hit },
        } => Some(hit.trigger),
        _ => None,
    }
}

#[test]
fn a_candidate_failing_3_points_more_is_rolled_back_before_50_percent() {
    let scenario = Scenario {
        candidate: ArmModel {
            failure: 0.08,
            ..ArmModel::BASELINE
        },
        ..Scenario::aa()
    };
    for seed in 0..5 {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let r = run(
            &canary(&format!("a-{seed}"), STEP, 1000),
            &scenario,
            T0,
            &mut rng,
        );
        assert_eq!(
            r.finish,
            Some(Finish::RolledBack),
            "seed {seed}: {:?}",
            r.last
        );
        assert!(
            r.max_share < pct(50),
            "seed {seed}: reached {}",
            r.max_share
        );
        // The cause is on record with its statistic and threshold.
        match &r.last.as_ref().unwrap().verdict {
            Verdict::Rollback {
                cause: Cause::Statistic { finding },
            } => {
                assert!(finding.ln_e >= finding.ln_threshold, "{finding:?}");
            }
            Verdict::Rollback {
                cause: Cause::Trigger { hit },
            } => {
                assert!(hit.observed >= hit.limit, "{hit:?}");
            }
            other => panic!("seed {seed}: {other:?}"),
        }
    }
}

#[test]
fn b_an_equal_candidate_is_promoted_to_100_percent() {
    for seed in 0..5 {
        let mut rng = ChaCha8Rng::seed_from_u64(100 + seed);
        let r = run(
            &canary(&format!("b-{seed}"), STEP, 1000),
            &Scenario::aa(),
            T0,
            &mut rng,
        );
        assert_eq!(
            r.finish,
            Some(Finish::Promoted),
            "seed {seed}: {:?}",
            r.last
        );
        assert_eq!(r.state.routing(), Routing::Promoted);
        assert_eq!(
            r.max_share,
            pct(50),
            "the last canary step before promotion"
        );
        // Three steps of at least five minutes each.
        assert!(r.elapsed >= 3 * STEP, "{:?}", r.elapsed);
        assert!(matches!(
            r.last.as_ref().unwrap().verdict,
            Verdict::Promote {
                by: dynscale_core::rollout::Actor::Analysis
            }
        ));
    }
}

#[test]
fn c_a_250_ms_latency_regression_is_rolled_back_by_the_hard_trigger() {
    let scenario = Scenario {
        candidate: ArmModel {
            latency_floor_ms: ArmModel::BASELINE.latency_floor_ms + 250.0,
            ..ArmModel::BASELINE
        },
        ..Scenario::aa()
    };
    for seed in 0..3 {
        let mut rng = ChaCha8Rng::seed_from_u64(200 + seed);
        let r = run(
            &canary(&format!("c-{seed}"), STEP, 1000),
            &scenario,
            T0,
            &mut rng,
        );
        assert_eq!(r.finish, Some(Finish::RolledBack), "seed {seed}");
        assert_eq!(
            trigger_of(&r),
            Some(Trigger::FeedbackLatency),
            "seed {seed}: {:?}",
            r.last
        );
        assert_eq!(r.max_share, pct(5));
    }
}

/// A/A: both arms identical; every rollback is a false one. With α = 0.01 the
/// statistical tests cross with probability at most 0.01 by Ville's inequality;
/// the hard triggers add a little. Lighter traffic and 2-minute steps keep the
/// 1 000 rollouts quick in a debug build; `benches/rollout_sim.rs` runs the default
/// canary.
#[test]
fn d_false_rollback_rate_of_1000_aa_rollouts_is_at_most_alpha() {
    let scenario = Scenario {
        requests_per_sec: 25,
        agents: 1_000,
        ..Scenario::aa()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(0xA_A);
    let runs = 1000;
    let mut rolled_back = 0;
    let mut by_statistic = 0;
    for i in 0..runs {
        let r = run(
            &canary(&format!("aa-{i}"), Duration::from_secs(120), 120),
            &scenario,
            T0,
            &mut rng,
        );
        match r.finish {
            Some(Finish::Promoted) => {}
            Some(Finish::RolledBack) => {
                rolled_back += 1;
                by_statistic += usize::from(r.rolled_back_by_statistic());
            }
            other => panic!("A/A rollout {i} ended {other:?}: {:?}", r.last),
        }
    }
    let rate = rolled_back as f64 / runs as f64;
    println!(
        "A/A: {rolled_back} of {runs} rolled back (rate {rate:.4}; {by_statistic} by a statistic), alpha {}",
        AnalysisConfig::default().alpha
    );
    assert!(
        rate <= AnalysisConfig::default().alpha,
        "false-rollback rate {rate}"
    );
}

#[test]
fn replaying_the_stored_events_rebuilds_the_same_state() {
    let scenario = Scenario {
        candidate: ArmModel {
            failure: 0.065,
            ..ArmModel::BASELINE
        },
        ..Scenario::aa()
    };
    let begin = canary("replay", STEP, 1000);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let r = run(&begin, &scenario, T0, &mut rng);
    let rebuilt = replay(&begin, T0, &r.events).unwrap();
    assert_eq!(rebuilt, r.state);

    // Through JSON, as a store would keep them: the start, the events and the state.
    let begin_json = serde_json::to_string(&begin).unwrap();
    let events_json = serde_json::to_string(&r.events).unwrap();
    let begin2: Start = serde_json::from_str(&begin_json).unwrap();
    let events2: Vec<dynscale_core::rollout::Stamped> = serde_json::from_str(&events_json).unwrap();
    assert_eq!(replay(&begin2, T0, &events2).unwrap(), r.state);
    let state_json = serde_json::to_string(&r.state).unwrap();
    let state2: dynscale_core::rollout::Rollout = serde_json::from_str(&state_json).unwrap();
    assert_eq!(state2, r.state);

    // Replaying a prefix and continuing gives the same result as one pass.
    let half = r.events.len() / 2;
    let mut s = replay(&begin, T0, &r.events[..half]).unwrap();
    for e in &r.events[half..] {
        s = step(&s, &e.event, e.at).unwrap().0;
    }
    assert_eq!(s, r.state);
}

fn decisions(arm: Arm, n: u64, deny_every: u64, failures: u64) -> Measurements {
    let mut m = Measurements::default();
    let stats: &mut ArmStats = m.arm_mut(arm);
    for i in 0..n {
        let o = if deny_every > 0 && i % deny_every == 0 {
            Outcome::Deny
        } else {
            Outcome::Allow
        };
        stats.record_decision(o, Duration::from_micros(30));
        let r = if i < failures {
            FeedbackResult::Failure
        } else {
            FeedbackResult::Success
        };
        stats.record_feedback(r, Duration::from_millis(100));
    }
    m
}

fn both(n_candidate: u64, n_control: u64) -> Measurements {
    let mut m = decisions(Arm::Candidate, n_candidate, 10, 0);
    m.merge(&decisions(Arm::Control, n_control, 10, 0));
    m
}

fn at(secs: u64) -> UnixMillis {
    T0.saturating_add(Duration::from_secs(secs))
}

#[test]
fn manual_controls() {
    let begin = canary("manual", STEP, 100);
    let (s, effects) = start(&begin, T0).unwrap();
    assert_eq!(
        effects,
        vec![Effect::Route(Routing::Split {
            candidate_share: pct(5)
        })]
    );

    let (s, effects) = step(&s, &Event::Command(Command::Pause), at(1)).unwrap();
    assert!(matches!(&effects[..], [Effect::Record(r)] if r.command == Some(Command::Pause)));
    assert_eq!(
        step(&s, &Event::Command(Command::Pause), at(2)).unwrap_err(),
        StepError::AlreadyPaused
    );
    // Paused: enough data and time, but no advance.
    let (s, effects) = step(&s, &Event::Measured(Box::new(both(500, 5_000))), at(400)).unwrap();
    assert!(effects.is_empty(), "{effects:?}");
    assert!(matches!(
        s.status(at(400)).verdict,
        Verdict::Hold {
            reason: HoldReason::Paused
        }
    ));
    // Resume advances at once.
    let (s, effects) = step(&s, &Event::Command(Command::Resume), at(401)).unwrap();
    assert_eq!(
        effects[0],
        Effect::Route(Routing::Split {
            candidate_share: pct(25)
        })
    );
    assert!(matches!(&effects[1], Effect::Record(r) if r.command == Some(Command::Resume)));
    assert_eq!(
        step(&s, &Event::Command(Command::Resume), at(402)).unwrap_err(),
        StepError::NotPaused
    );

    let (promoted, effects) = step(&s, &Event::Command(Command::Promote), at(403)).unwrap();
    assert_eq!(effects[0], Effect::Promote);
    assert_eq!(promoted.routing(), Routing::Promoted);
    assert!(matches!(
        step(&promoted, &Event::Command(Command::Abort), at(404)).unwrap_err(),
        StepError::Finished {
            finish: Finish::Promoted,
            ..
        }
    ));
    // Measurements after the end change nothing.
    let (same, effects) =
        step(&promoted, &Event::Measured(Box::new(both(10, 10))), at(405)).unwrap();
    assert!(effects.is_empty());
    assert_eq!(same, promoted);

    let (aborted, effects) = step(&s, &Event::Command(Command::Abort), at(403)).unwrap();
    assert_eq!(effects[0], Effect::Rollback);
    assert!(matches!(
        aborted.phase,
        Phase::Done {
            finish: Finish::Aborted,
            ..
        }
    ));
    assert_eq!(aborted.routing(), Routing::Previous);
}

#[test]
fn not_enough_data_holds_and_never_rolls_back() {
    let begin = canary("small", STEP, 1000);
    let (s, _) = start(&begin, T0).unwrap();
    // 50 candidate decisions, every action failed: a huge rate difference on too
    // small a sample for either the tests or the hard triggers.
    let mut m = decisions(Arm::Candidate, 50, 10, 50);
    m.merge(&decisions(Arm::Control, 5_000, 10, 250));
    let (s, effects) = step(&s, &Event::Measured(Box::new(m)), at(400)).unwrap();
    assert!(!effects.contains(&Effect::Rollback), "{effects:?}");
    assert!(!s.is_finished());
    match s.status(at(400)).verdict {
        Verdict::Hold {
            reason:
                HoldReason::NotEnoughData {
                    arm: Arm::Candidate,
                    have: 50,
                    need: 1000,
                },
        } => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn hard_triggers_roll_back_from_any_state() {
    let begin = canary("hard", STEP, 1000);
    let (s, _) = start(&begin, T0).unwrap();
    let mut m = Measurements::default();
    for _ in 0..6 {
        m.candidate.record_error(true);
    }
    let (s, effects) = step(&s, &Event::Measured(Box::new(m.clone())), at(10)).unwrap();
    assert!(
        effects.is_empty(),
        "6 critical errors in a minute: {effects:?}"
    );
    // Six more 30 s later: 12 within the minute.
    let (s2, effects) = step(&s, &Event::Measured(Box::new(m.clone())), at(40)).unwrap();
    assert_eq!(effects[0], Effect::Rollback);
    assert!(matches!(&effects[1], Effect::Record(r) if matches!(
        &r.verdict, Verdict::Rollback { cause: Cause::Trigger { hit } } if hit.trigger == Trigger::CriticalErrors && hit.observed == 12.0
    )));
    assert!(matches!(
        s2.phase,
        Phase::Done {
            finish: Finish::RolledBack,
            ..
        }
    ));
    // Six more 70 s later: the first six have left the window.
    let (s3, effects) = step(&s, &Event::Measured(Box::new(m)), at(80)).unwrap();
    assert!(effects.is_empty());
    assert!(!s3.is_finished());

    let hot = Measurements {
        utilization: BasisPoints::new(8_100).ok(),
        ..Measurements::default()
    };
    let (_, effects) = step(&s3, &Event::Measured(Box::new(hot)), at(90)).unwrap();
    assert_eq!(effects[0], Effect::Rollback);
}

#[test]
fn a_clock_stepping_back_does_not_rewind_the_step_timer() {
    let begin = canary("clock", STEP, 10);
    let (s, _) = start(&begin, T0).unwrap();
    let (s, _) = step(&s, &Event::Measured(Box::new(both(20, 200))), at(200)).unwrap();
    let (s, effects) = step(&s, &Event::Tick, at(100)).unwrap();
    assert!(effects.is_empty());
    assert_eq!(s.updated_at, at(200));
    let (_, effects) = step(&s, &Event::Tick, at(301)).unwrap();
    assert_eq!(
        effects[0],
        Effect::Route(Routing::Split {
            candidate_share: pct(25)
        })
    );
}

fn blue_green(salt: &str) -> Start {
    Start {
        salt: dynscale_core::rollout::RolloutSalt::new(salt).expect("test salts have no NUL"),
        plan: Plan::BlueGreen {
            shadow_samples: 2_000,
            keep_warm: Duration::from_secs(600),
        },
        config: AnalysisConfig::default(),
    }
}

#[test]
fn blue_green_switches_watches_and_promotes_an_equal_candidate() {
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let r = run(&blue_green("bg-equal"), &Scenario::aa(), T0, &mut rng);
    assert_eq!(r.finish, Some(Finish::Promoted), "{:?}", r.last);
    // 2 000 shadow comparisons at ~90/s, then the 10 minute watch.
    assert!(
        r.elapsed >= Duration::from_secs(600 + 20),
        "{:?}",
        r.elapsed
    );
    assert!(r.state.baseline.is_some());
    assert_eq!(r.state.closed.len(), 1);
}

#[test]
fn blue_green_pre_promotion_check_stops_a_candidate_that_denies_more() {
    let scenario = Scenario {
        candidate: ArmModel {
            deny: 0.30,
            ..ArmModel::BASELINE
        },
        ..Scenario::aa()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(32);
    let r = run(&blue_green("bg-deny"), &scenario, T0, &mut rng);
    assert_eq!(r.finish, Some(Finish::RolledBack));
    assert_eq!(r.max_share, BasisPoints::ZERO, "never switched");
    assert!(r.state.totals.shadow.allow_to_deny.count > r.state.totals.shadow.deny_to_allow.count);
    assert!(matches!(
        &r.last.unwrap().verdict,
        Verdict::Rollback { cause: Cause::Statistic { finding } } if finding.metric == dynscale_core::rollout::Metric::DenyRate
    ));
}

#[test]
fn blue_green_reverts_a_candidate_that_fails_after_the_switch() {
    let scenario = Scenario {
        candidate: ArmModel {
            failure: 0.09,
            ..ArmModel::BASELINE
        },
        ..Scenario::aa()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(33);
    let r = run(&blue_green("bg-fail"), &scenario, T0, &mut rng);
    assert_eq!(r.finish, Some(Finish::RolledBack), "{:?}", r.last);
    assert_eq!(
        r.max_share,
        BasisPoints::ALL,
        "switched before the failures showed"
    );
    assert!(matches!(r.last.as_ref().unwrap().phase, Phase::Done { .. }));
}

#[test]
fn shadow_reports_the_diff_and_waits_for_an_operator() {
    let scenario = Scenario {
        candidate: ArmModel {
            deny: 0.15,
            ..ArmModel::BASELINE
        },
        max_time: Duration::from_secs(1200),
        ..Scenario::aa()
    };
    let begin = Start {
        salt: dynscale_core::rollout::RolloutSalt::new("shadow").unwrap(),
        plan: Plan::Shadow,
        config: AnalysisConfig::default(),
    };
    let mut rng = ChaCha8Rng::seed_from_u64(34);
    let r = run(&begin, &scenario, T0, &mut rng);
    assert_eq!(r.finish, None, "shadow never ends by itself");
    let diff = &r.state.totals.shadow;
    assert!(diff.compared > 100_000);
    assert!(diff.allow_to_deny.count > diff.deny_to_allow.count);
    assert_eq!(diff.allow_to_deny.exemplars.len(), 10);
    assert!(matches!(
        r.state.status(at(1200)).verdict,
        Verdict::Hold {
            reason: HoldReason::AwaitingOperator
        }
    ));
    let (s, effects) = step(&r.state, &Event::Command(Command::Promote), at(1201)).unwrap();
    assert_eq!(effects[0], Effect::Promote);
    assert_eq!(s.routing(), Routing::Promoted);
}

#[test]
fn immediate_promotes_at_start() {
    let begin = Start {
        salt: dynscale_core::rollout::RolloutSalt::new("now").unwrap(),
        plan: Plan::Immediate,
        config: AnalysisConfig::default(),
    };
    let (s, effects) = start(&begin, T0).unwrap();
    assert_eq!(effects[0], Effect::Promote);
    assert_eq!(s.routing(), Routing::Promoted);
    let bad = Start {
        config: AnalysisConfig {
            alpha: 0.0,
            ..AnalysisConfig::default()
        },
        ..begin
    };
    assert!(start(&bad, T0).is_err());
}

#[test]
fn the_document_check_refuses_activation_fields_of_another_strategy() {
    let doc = |activation: &str| {
        format!(
            "policyId: 1f0c9d2e-8b7a-4c3d-9e2f-0a1b2c3d4e5f\nname: guard\nversion: 1.0.0\n\
             namespace: \"*.*.*.*.org\"\nactivation:\n{activation}rules:\n  - id: r\n    cedar: |\n      \
             permit(principal, action, resource);\n"
        )
    };
    let ok = doc("  strategy: blue-green\n  keepWarm: 5m\n  minSamples: 500\n");
    assert!(dynscale_core::policy::check_document("t.yaml", &ok, None).is_ok());

    let bad = doc("  strategy: canary\n  keepWarm: 5m\n  steps: [50, 10]\n");
    let findings = dynscale_core::policy::check_document("t.yaml", &bad, None).unwrap_err();
    let fields: Vec<(Option<&str>, Option<usize>)> = findings
        .iter()
        .map(|d| (d.field.as_deref(), d.line))
        .collect();
    assert_eq!(
        fields,
        vec![
            (Some("activation.keepWarm"), Some(7)),
            (Some("activation.steps"), Some(8))
        ],
        "{findings:#?}"
    );
    assert_eq!(
        findings[0].message,
        "`keepWarm` does not apply to strategy `canary`"
    );
}
