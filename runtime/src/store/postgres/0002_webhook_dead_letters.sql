-- Migration 2 (SQLite's migration 11): webhook dead letters. An event a webhook's endpoint
-- did not acknowledge within the give-up limit is recorded here with the event's JSON as
-- sent, and the webhook moves on; a successful redelivery deletes the row.
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id                 BIGSERIAL PRIMARY KEY,
    url                TEXT NOT NULL,
    event_seq          BIGINT NOT NULL,
    event              TEXT NOT NULL,
    attempts           BIGINT NOT NULL,
    last_error         TEXT NOT NULL,
    first_failed_at_ms BIGINT NOT NULL,
    updated_at_ms      BIGINT NOT NULL,
    UNIQUE (url, event_seq)
);
