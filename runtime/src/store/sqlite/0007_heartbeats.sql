-- Migration 7: heartbeats of long activities.
-- heartbeat_details: JSON of the last details an attempt recorded (written at most every few
-- seconds while it runs, and with the retry when it fails), given to the next attempt.
-- last_heartbeat_ms: when those details were written, as `pinion status` shows it.
ALTER TABLE activity_tasks ADD COLUMN heartbeat_details TEXT;
ALTER TABLE activity_tasks ADD COLUMN last_heartbeat_ms INTEGER;
