-- pinion schema, migration 1. Migrations are numbered; see MIGRATIONS in store/sqlite/mod.rs.
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS modules (
    hash           TEXT PRIMARY KEY,   -- lower-case hex SHA-256 of bytes
    bytes          BLOB NOT NULL,
    size           INTEGER NOT NULL,
    manifest       TEXT NOT NULL,      -- JSON of pinion_abi::Manifest
    deployed_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS instances (
    id             TEXT PRIMARY KEY,
    workflow_type  TEXT NOT NULL,
    module_hash    TEXT NOT NULL,      -- no foreign key: imported histories need no module
    status         TEXT NOT NULL,      -- running | blocked | completed | failed
    created_at_ms  INTEGER NOT NULL,
    updated_at_ms  INTEGER NOT NULL,
    event_count    INTEGER NOT NULL,
    runnable       INTEGER NOT NULL,   -- 1 when undelivered input waits
    result         TEXT,               -- JSON payload when completed
    failure        TEXT,               -- JSON of pinion_abi::Failure when failed
    blocked_reason TEXT
);
CREATE INDEX IF NOT EXISTS instances_runnable ON instances(updated_at_ms) WHERE runnable = 1;
CREATE INDEX IF NOT EXISTS instances_status ON instances(status, workflow_type);
CREATE INDEX IF NOT EXISTS instances_module ON instances(module_hash, status);

CREATE TABLE IF NOT EXISTS events (
    instance_id TEXT NOT NULL,
    id          INTEGER NOT NULL,      -- dense, from 1
    time_ms     INTEGER NOT NULL,
    data        TEXT NOT NULL,         -- JSON of EventKind (with its "type" tag)
    PRIMARY KEY (instance_id, id)
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS inbox (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id TEXT NOT NULL,
    time_ms     INTEGER NOT NULL,
    data        TEXT NOT NULL          -- JSON of the EventKind it becomes
);
CREATE INDEX IF NOT EXISTS inbox_instance ON inbox(instance_id, id);

CREATE TABLE IF NOT EXISTS activity_tasks (
    instance_id    TEXT NOT NULL,
    seq            INTEGER NOT NULL,
    module_hash    TEXT NOT NULL,
    activity_type  TEXT NOT NULL,
    input          TEXT NOT NULL,
    options        TEXT NOT NULL,      -- JSON of pinion_abi::ActivityOptions
    attempt        INTEGER NOT NULL,   -- the current attempt, from 1
    visible_at_ms  INTEGER NOT NULL,   -- not before (retry backoff)
    lease_until_ms INTEGER,            -- NULL when not claimed
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS activity_tasks_due ON activity_tasks(visible_at_ms);

CREATE TABLE IF NOT EXISTS timers (
    instance_id TEXT NOT NULL,
    seq         INTEGER NOT NULL,
    fire_at_ms  INTEGER NOT NULL,
    PRIMARY KEY (instance_id, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS timers_due ON timers(fire_at_ms);
