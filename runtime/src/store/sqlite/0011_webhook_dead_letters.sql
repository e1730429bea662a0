-- Migration 11: webhook dead letters.
-- An event a webhook's endpoint did not acknowledge (2xx) within the give-up limit
-- (`pinion server --webhook-give-up-after`) is recorded here, and the webhook moves on to
-- the next event, so one bad event no longer holds its queue. The row keeps the event's
-- JSON as it was sent, so it can be redelivered (`POST /v1/webhooks/dead-letters/{id}/redeliver`)
-- whatever happens to the outbox; a successful redelivery deletes it.
CREATE TABLE IF NOT EXISTS webhook_dead_letters (
    id                 INTEGER PRIMARY KEY AUTOINCREMENT,
    url                TEXT NOT NULL,
    event_seq          INTEGER NOT NULL,
    event              TEXT NOT NULL,
    attempts           INTEGER NOT NULL,
    last_error         TEXT NOT NULL,
    first_failed_at_ms INTEGER NOT NULL,
    updated_at_ms      INTEGER NOT NULL,
    UNIQUE (url, event_seq)
);
