-- Migration 9: an instance whose closing activation was refused because input arrived
-- while it ran is marked closing; signals to it are refused until an activation commits
-- (closing it, or, if the code goes on, clearing the mark), so a stream of signals cannot
-- keep it from completing.
ALTER TABLE instances ADD COLUMN closing INTEGER NOT NULL DEFAULT 0;
