-- Migration 5: lifecycle events (the outbox).
-- Every instance transition (started, completed, failed, cancelled, terminated, blocked,
-- upgraded, continued as new) appends one row here in the transaction that makes it, so a
-- reader (the `/v1/events` stream, webhooks, `pinion events`) sees exactly the committed
-- transitions, in commit order, and resumes after any row by its `seq`.
CREATE TABLE IF NOT EXISTS lifecycle_events (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    instance_id   TEXT NOT NULL,
    kind          TEXT NOT NULL,
    workflow_type TEXT NOT NULL,
    module_hash   TEXT NOT NULL,
    run           INTEGER NOT NULL,
    at_ms         INTEGER NOT NULL,
    detail        TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lifecycle_events_instance ON lifecycle_events(instance_id, seq);

-- How far each webhook has been delivered: the `seq` of the last event its endpoint
-- acknowledged (2xx). Deliveries resume from here after a restart.
CREATE TABLE IF NOT EXISTS webhook_cursors (
    url           TEXT PRIMARY KEY,
    delivered_seq INTEGER NOT NULL,
    updated_at_ms INTEGER NOT NULL
) WITHOUT ROWID;
