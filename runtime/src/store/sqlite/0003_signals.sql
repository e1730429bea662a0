-- Migration 3: signals, cancellation and termination.
-- A cancellation is delivered at most once; this flag makes "already requested" an O(1)
-- check instead of a scan of the instance's history and inbox.
ALTER TABLE instances ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0;
