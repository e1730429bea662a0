-- Migration 2: safe rollout. Aliases with ramping and their history, and the
-- non-determinism policy per module and workflow type.
CREATE TABLE IF NOT EXISTS aliases (
    name          TEXT PRIMARY KEY,
    module_hash   TEXT NOT NULL,      -- where new instances go
    ramp_hash     TEXT,               -- the module being ramped to, if any
    ramp_percent  INTEGER,            -- share of new instances sent to ramp_hash, 0-100
    updated_at_ms INTEGER NOT NULL
);

CREATE TABLE IF NOT EXISTS alias_history (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    name          TEXT NOT NULL,
    action        TEXT NOT NULL,      -- set | ramp | ramp-cancel
    module_hash   TEXT,
    ramp_percent  INTEGER,
    at_ms         INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS alias_history_name ON alias_history(name, id);

CREATE TABLE IF NOT EXISTS policies (
    module_hash   TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    policy        TEXT NOT NULL,      -- block | fail
    PRIMARY KEY (module_hash, workflow_type)
) WITHOUT ROWID;

-- Histories imported from another database (`pinion history import`): kept for replay and
-- inspection, never run, not counted as instances pinning a module.
ALTER TABLE instances ADD COLUMN imported INTEGER NOT NULL DEFAULT 0;
