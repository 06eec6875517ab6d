//! Arbitrary bytes as a decision request body: decoding, building the request and
//! deciding against the example policies must never panic, and the decision must be
//! the same with the fast path on as with every rule evaluated by Cedar.
#![no_main]

use std::sync::{Arc, OnceLock};

use dynscale_core::controls::ControlState;
use dynscale_core::decision::decide;
use dynscale_core::ids::SnapshotId;
use dynscale_core::policy::check_document;
use dynscale_core::request::ActionRequest;
use dynscale_core::snapshot::{EngineConfig, Snapshot};
use dynscale_server::wire::{EvaluationRequest, decode};
use libfuzzer_sys::fuzz_target;

const POLICIES: [(&str, &str); 5] = [
    (
        "base-safety.yaml",
        include_str!("../../examples/policies/base-safety.yaml"),
    ),
    (
        "data-export.yaml",
        include_str!("../../examples/policies/data-export.yaml"),
    ),
    (
        "email-guard.yaml",
        include_str!("../../examples/policies/email-guard.yaml"),
    ),
    (
        "payments-guard.yaml",
        include_str!("../../examples/policies/payments-guard.yaml"),
    ),
    (
        "shell-guard.yaml",
        include_str!("../../examples/policies/shell-guard.yaml"),
    ),
];

/// The example policies compiled with the fast path on (`true`) and off.
fn snapshot(fast_path: bool) -> &'static Snapshot {
    static FAST: OnceLock<Snapshot> = OnceLock::new();
    static CEDAR: OnceLock<Snapshot> = OnceLock::new();
    let cell = if fast_path { &FAST } else { &CEDAR };
    cell.get_or_init(|| {
        let in_force = POLICIES
            .iter()
            .map(|(origin, text)| match check_document(origin, text, None) {
                Ok(p) => Arc::new(p),
                Err(findings) => panic!("example policy {origin} does not check: {findings:?}"),
            })
            .collect();
        Snapshot::compile(
            SnapshotId(1),
            in_force,
            None,
            Arc::new(EngineConfig {
                fast_path,
                ..EngineConfig::default()
            }),
            None,
        )
        .unwrap_or_else(|e| panic!("example policies do not compile: {e}"))
    })
}

fn controls() -> &'static ControlState {
    static CONTROLS: OnceLock<ControlState> = OnceLock::new();
    CONTROLS.get_or_init(ControlState::default)
}

fuzz_target!(|data: &[u8]| {
    let Ok(req) = decode::<EvaluationRequest>(data) else {
        return;
    };
    let input = req.action_input(None);
    let Ok(action) = ActionRequest::build(&input, None) else {
        return;
    };
    let decided = |fast_path| {
        decide(snapshot(fast_path), controls(), &action).map(|mut d| {
            // Which evaluator decided differs by design; Cedar reports errors in no
            // particular order.
            d.evaluator = None;
            d.errors.sort();
            d
        })
    };
    let (fast, cedar) = (decided(true), decided(false));
    match (&fast, &cedar) {
        (Ok(f), Ok(c)) => assert_eq!(f, c, "fast path and Cedar disagree"),
        (Err(f), Err(c)) => assert_eq!(f.to_string(), c.to_string()),
        _ => panic!("fast path {fast:?}, Cedar {cedar:?}"),
    }
});
