-- Many servers on one database (issue 14): each server running workers is a row here while
-- it lives. Its liveness is a session advisory lock on `lock_key`, held by a connection of
-- its own: when the process dies its connection closes and the lock is free, so a peer that
-- can take the lock knows the server is gone (no clocks compared between hosts).
CREATE TABLE workers (
    id            TEXT PRIMARY KEY,
    lock_key      BIGINT NOT NULL UNIQUE,
    host          TEXT NOT NULL,
    pid           BIGINT NOT NULL,
    joined_at_ms  BIGINT NOT NULL
);

-- The server whose workers activate this instance (it caches the live run between
-- activations); NULL when any server may take it. Freed when its server leaves or dies.
ALTER TABLE instances ADD COLUMN owner TEXT;
CREATE INDEX instances_owner ON instances(owner) WHERE owner IS NOT NULL;

-- The server whose worker runs the leased attempt; an attempt leased by a server that is
-- gone is a lost attempt, counted and retried by a live one.
ALTER TABLE activity_tasks ADD COLUMN leased_by TEXT;
