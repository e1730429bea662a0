-- pinion on PostgreSQL, migration 1: the schema SQLite reaches at its migration 10, in one
-- step. Migrations are numbered; see MIGRATIONS in store/postgres/schema.rs. Every JSON
-- column holds exactly the text SQLite stores, so export, import and `pinion migrate` are
-- straight copies. Times are ms since the epoch (BIGINT); sequence numbers are BIGINT too.
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE modules (
    hash           TEXT PRIMARY KEY,   -- lower-case hex SHA-256 of the code
    size           BIGINT NOT NULL,
    manifest       TEXT NOT NULL,      -- JSON of pinion_abi::Manifest
    deployed_at_ms BIGINT NOT NULL
);

-- The code apart from the record (as SQLite's migration 10): listing modules never reads it.
CREATE TABLE module_code (
    hash  TEXT PRIMARY KEY REFERENCES modules(hash) ON DELETE CASCADE,
    bytes BYTEA NOT NULL
);

CREATE TABLE instances (
    id               TEXT PRIMARY KEY,
    workflow_type    TEXT NOT NULL,
    module_hash      TEXT NOT NULL,    -- no foreign key: imported histories need no module
    status           TEXT NOT NULL,    -- running | blocked | completed | failed | cancelled | terminated
    created_at_ms    BIGINT NOT NULL,
    updated_at_ms    BIGINT NOT NULL,
    event_count      BIGINT NOT NULL,
    runnable         BOOLEAN NOT NULL, -- true when undelivered input waits
    result           TEXT,             -- JSON payload when completed
    failure          TEXT,             -- JSON of pinion_abi::Failure when it ended otherwise
    blocked_reason   TEXT,
    imported         BOOLEAN NOT NULL DEFAULT FALSE,
    cancel_requested BOOLEAN NOT NULL DEFAULT FALSE,
    parent_id        TEXT,
    parent_seq       BIGINT,
    run              BIGINT NOT NULL DEFAULT 1,
    closing          BOOLEAN NOT NULL DEFAULT FALSE
);
CREATE INDEX instances_runnable ON instances(updated_at_ms) WHERE runnable;
CREATE INDEX instances_status ON instances(status, workflow_type);
CREATE INDEX instances_module ON instances(module_hash, status);
CREATE INDEX instances_parent ON instances(parent_id) WHERE parent_id IS NOT NULL;
CREATE INDEX instances_created ON instances(created_at_ms DESC, id);
CREATE INDEX instances_status_created ON instances(status, created_at_ms DESC, id);
CREATE INDEX instances_type_created ON instances(workflow_type, created_at_ms DESC, id);
CREATE INDEX instances_module_created ON instances(module_hash, created_at_ms DESC, id);
CREATE INDEX instances_ended ON instances(updated_at_ms, id)
    WHERE status IN ('completed', 'failed', 'cancelled', 'terminated');

CREATE TABLE events (
    instance_id TEXT NOT NULL,
    id          BIGINT NOT NULL,       -- dense, from 1
    time_ms     BIGINT NOT NULL,
    data        TEXT NOT NULL,         -- JSON of EventKind (with its "type" tag)
    PRIMARY KEY (instance_id, id)
);

CREATE TABLE inbox (
    id          BIGSERIAL PRIMARY KEY,
    instance_id TEXT NOT NULL,
    time_ms     BIGINT NOT NULL,
    data        TEXT NOT NULL          -- JSON of the EventKind it becomes
);
CREATE INDEX inbox_instance ON inbox(instance_id, id);

CREATE TABLE activity_tasks (
    instance_id       TEXT NOT NULL,
    seq               BIGINT NOT NULL,
    module_hash       TEXT NOT NULL,
    activity_type     TEXT NOT NULL,
    input             TEXT NOT NULL,
    options           TEXT NOT NULL,   -- JSON of pinion_abi::ActivityOptions
    attempt           BIGINT NOT NULL, -- the current attempt, from 1
    visible_at_ms     BIGINT NOT NULL, -- not before (retry backoff)
    lease_until_ms    BIGINT,          -- NULL when not claimed
    started_at_ms     BIGINT,
    last_failure      TEXT,
    heartbeat_details TEXT,
    last_heartbeat_ms BIGINT,
    PRIMARY KEY (instance_id, seq)
);
CREATE INDEX activity_tasks_ready ON activity_tasks(visible_at_ms) WHERE lease_until_ms IS NULL;
CREATE INDEX activity_tasks_leased ON activity_tasks(lease_until_ms) WHERE lease_until_ms IS NOT NULL;

CREATE TABLE timers (
    instance_id TEXT NOT NULL,
    seq         BIGINT NOT NULL,
    fire_at_ms  BIGINT NOT NULL,
    PRIMARY KEY (instance_id, seq)
);
CREATE INDEX timers_due ON timers(fire_at_ms);

CREATE TABLE aliases (
    name          TEXT PRIMARY KEY,
    module_hash   TEXT NOT NULL,
    ramp_hash     TEXT,
    ramp_percent  BIGINT,
    updated_at_ms BIGINT NOT NULL
);

CREATE TABLE alias_history (
    id            BIGSERIAL PRIMARY KEY,
    name          TEXT NOT NULL,
    action        TEXT NOT NULL,       -- set | ramp | ramp-cancel
    module_hash   TEXT,
    ramp_percent  BIGINT,
    at_ms         BIGINT NOT NULL
);
CREATE INDEX alias_history_name ON alias_history(name, id);

CREATE TABLE policies (
    module_hash   TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    policy        TEXT NOT NULL,       -- block | fail
    PRIMARY KEY (module_hash, workflow_type)
);

CREATE TABLE runs (
    instance_id   TEXT NOT NULL,
    run           BIGINT NOT NULL,
    workflow_type TEXT NOT NULL,
    module_hash   TEXT NOT NULL,
    started_at_ms BIGINT NOT NULL,
    ended_at_ms   BIGINT NOT NULL,
    events        TEXT NOT NULL,       -- JSON array of the run's events, as exported
    PRIMARY KEY (instance_id, run)
);

-- The outbox. `seq` is not a sequence: it is max + 1, assigned just before COMMIT under a
-- transaction-scoped advisory lock, so ids are dense and every reader sees them commit in
-- order (a sequence would leave gaps on rollback and commit out of order).
CREATE TABLE lifecycle_events (
    seq           BIGINT PRIMARY KEY,
    instance_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    module_hash   TEXT NOT NULL,
    run           BIGINT NOT NULL,
    at_ms         BIGINT NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX lifecycle_events_instance ON lifecycle_events(instance_id, seq);

CREATE TABLE webhook_cursors (
    url           TEXT PRIMARY KEY,
    delivered_seq BIGINT NOT NULL,
    updated_at_ms BIGINT NOT NULL
);
