-- Migration 6: claiming activity tasks without scanning the ones in flight.
-- With thousands of attempts leased at once, an index on visible_at_ms alone made every
-- claim walk past all of them. Unleased tasks (ready, or waiting out a retry backoff) and
-- leased ones (in flight, or left behind by a crashed process) now have an index each.
DROP INDEX IF EXISTS activity_tasks_due;
CREATE INDEX IF NOT EXISTS activity_tasks_ready ON activity_tasks(visible_at_ms) WHERE lease_until_ms IS NULL;
CREATE INDEX IF NOT EXISTS activity_tasks_leased ON activity_tasks(lease_until_ms) WHERE lease_until_ms IS NOT NULL;

-- What `pinion status` shows of each pending activity: when the current attempt started
-- (NULL until claimed) and how the previous attempt failed (JSON of pinion_abi::Failure).
ALTER TABLE activity_tasks ADD COLUMN started_at_ms INTEGER;
ALTER TABLE activity_tasks ADD COLUMN last_failure TEXT;
