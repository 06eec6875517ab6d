//! Arbitrary text as a policy document: checking must never panic, and a document
//! that checks must always compile into a snapshot.
#![no_main]

use std::sync::Arc;

use dynscale_core::ids::SnapshotId;
use dynscale_core::policy::check_document;
use dynscale_core::snapshot::{EngineConfig, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(policy) = check_document("fuzz.yaml", text, None) else {
        return;
    };
    if let Err(e) = Snapshot::compile(
        SnapshotId(1),
        vec![Arc::new(policy)],
        None,
        Arc::new(EngineConfig::default()),
        None,
    ) {
        panic!("a checked policy failed to compile: {e}");
    }
});
