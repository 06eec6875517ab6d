//! dynscale-store: persistence. The [`StateStore`] trait and its embedded SQLite
//! backend. Knows nothing of HTTP.

mod state;

pub use state::{
    AgentRecord, ControlChange, NewEvent, PolicyChange, StateStore, StoreError, StoredEvent,
    StoredState, StoredVersion,
};
