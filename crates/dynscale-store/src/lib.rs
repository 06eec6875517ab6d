//! dynscale-store: persistence. The [`StateStore`] trait, its embedded SQLite
//! backend and the conformance suite every backend passes. Knows nothing of HTTP.

pub mod audit;
#[doc(hidden)]
pub mod conformance;
pub mod sqlite;
mod state;
pub mod volume;

pub use sqlite::SqliteStore;
pub use state::{
    AgentRecord, ControlChange, NewEvent, NewRollout, PolicyChange, RolloutFinish, RolloutStarted,
    RolloutStep, StateStore, StoreError, StoredEvent, StoredRollout, StoredState, StoredVersion,
};
