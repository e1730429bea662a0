-- Migration 4: child workflows and continue-as-new.
-- A child knows its parent (and its sequence number there), so its end can be delivered to
-- the parent's inbox and a parent's end can terminate its running children.
ALTER TABLE instances ADD COLUMN parent_id TEXT;
ALTER TABLE instances ADD COLUMN parent_seq INTEGER;
CREATE INDEX IF NOT EXISTS instances_parent ON instances(parent_id) WHERE parent_id IS NOT NULL;
-- The number of the current run: 1, then +1 at each continue-as-new.
ALTER TABLE instances ADD COLUMN run INTEGER NOT NULL DEFAULT 1;

-- Runs that ended with continue-as-new, with their complete history (a JSON array of
-- events, as in the export format), so `pinion history ID --run N` can still show them.
CREATE TABLE IF NOT EXISTS runs (
    instance_id   TEXT NOT NULL,
    run           INTEGER NOT NULL,
    workflow_type TEXT NOT NULL,
    module_hash   TEXT NOT NULL,
    started_at_ms INTEGER NOT NULL,
    ended_at_ms   INTEGER NOT NULL,
    events        TEXT NOT NULL,
    PRIMARY KEY (instance_id, run)
) WITHOUT ROWID;
