-- Rollouts (progressive policy delivery). A rollout's state is never stored as
-- such: the node rebuilds it by replaying the start and the accepted events in
-- order (dynscale_core::rollout::replay), so the stored rows are exactly what the
-- state machine was given. Times are Unix milliseconds, as the machine sees them.

CREATE TABLE rollouts (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    name       TEXT NOT NULL,
    -- The version rolled out; stored, not active until promoted.
    candidate  TEXT NOT NULL,
    -- The standing version it is compared with.
    control    TEXT NOT NULL,
    -- dynscale_core::rollout::Start as JSON: salt, plan, analysis configuration.
    start      TEXT NOT NULL CHECK (json_valid(start)),
    started_at INTEGER NOT NULL,
    -- NULL while running; how it ended (JSON) once finished.
    finish     TEXT CHECK (finish IS NULL OR json_valid(finish)),
    FOREIGN KEY (name, candidate) REFERENCES policy_versions (name, version),
    FOREIGN KEY (name, control) REFERENCES policy_versions (name, version)
);

-- At most one running rollout per name.
CREATE UNIQUE INDEX rollouts_one_running ON rollouts (name) WHERE finish IS NULL;

-- Accepted events (dynscale_core::rollout::Event as JSON) in the order they were
-- applied.
CREATE TABLE rollout_events (
    rollout INTEGER NOT NULL REFERENCES rollouts (id),
    seq     INTEGER NOT NULL,
    at      INTEGER NOT NULL,
    event   TEXT NOT NULL CHECK (json_valid(event)),
    PRIMARY KEY (rollout, seq)
);
