-- The initial schema of the embedded state store.
--
-- Timestamps are RFC 3339 text in UTC with exactly nine fractional digits, so they
-- keep nanoseconds and sort as text in time order (the escalation listings rely on
-- that). Uuids are lowercase hyphenated text. JSON columns are checked as valid
-- JSON so a bad write fails here instead of when the state is next loaded.

-- Every pushed version, kept forever. Semver precedence (numeric pre-release
-- identifiers, rc.10 after rc.2) is not a plain column order, so the store sorts
-- versions with semver's own ordering after reading them; the text is the key.
CREATE TABLE policy_versions (
    name      TEXT NOT NULL,
    version   TEXT NOT NULL,
    policy_id TEXT NOT NULL,
    format    TEXT NOT NULL,
    source    TEXT NOT NULL,
    pushed_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);

-- The versions in force; a version can only be active if it is stored.
CREATE TABLE active_policies (
    name    TEXT NOT NULL,
    version TEXT NOT NULL,
    PRIMARY KEY (name, version),
    FOREIGN KEY (name, version) REFERENCES policy_versions (name, version)
);

-- The change history. AUTOINCREMENT so an id is never reused, even after the
-- newest rows are deleted: event ids number snapshots and must only grow.
CREATE TABLE events (
    id      INTEGER PRIMARY KEY AUTOINCREMENT,
    at      TEXT NOT NULL,
    kind    TEXT NOT NULL,
    subject TEXT NOT NULL,
    detail  TEXT NOT NULL CHECK (json_valid(detail))
);

-- Finding the last policy event at start must not scan the whole history.
CREATE INDEX events_kind ON events (kind);

-- A global switch has the empty id.
CREATE TABLE kill_switches (
    scope TEXT NOT NULL CHECK (scope IN ('global', 'pack', 'agent')),
    id    TEXT NOT NULL,
    PRIMARY KEY (scope, id)
);

CREATE TABLE quarantines (
    agent       TEXT PRIMARY KEY NOT NULL,
    since       TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    reason      TEXT NOT NULL
);

CREATE TABLE escalations (
    id          TEXT PRIMARY KEY NOT NULL,
    decision_id TEXT NOT NULL,
    fingerprint TEXT NOT NULL,
    agent       TEXT NOT NULL,
    action      TEXT NOT NULL,
    resource    TEXT NOT NULL,
    namespace   TEXT NOT NULL,
    reason      TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    status      TEXT NOT NULL CHECK (status IN ('pending', 'approved', 'denied', 'used')),
    decided_at  TEXT
);

-- Loading reads the open ones (by status, oldest first); a retried action is
-- matched by fingerprint.
CREATE INDEX escalations_status ON escalations (status, created_at);
CREATE INDEX escalations_fingerprint ON escalations (fingerprint);

CREATE TABLE agents (
    id         TEXT PRIMARY KEY NOT NULL,
    pack       TEXT,
    attributes TEXT NOT NULL CHECK (json_valid(attributes) AND json_type(attributes) = 'object')
);
