-- The platform's tables (idempotent: services baked before the platform had its own migration
-- made them in their first migration).

-- Written in the same transaction as the row it announces (`outbox.enqueue`); the relay
-- publishes it to the Redis stream and deletes it. A rolled-back row has no outbox entry; a
-- committed one always has. `headers` travel with the event besides its payload (the request id,
-- and the W3C trace context when tracing is on): the relay publishes them as the stream entry's
-- `headers` field.
CREATE TABLE IF NOT EXISTS outbox (
    id         bigserial   PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    stream     text        NOT NULL,
    event_type text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);
ALTER TABLE outbox ADD COLUMN IF NOT EXISTS headers jsonb NOT NULL DEFAULT '{}';

-- One row per handled event, written in the same transaction as the effect: the primary key
-- makes a redelivered (or republished) event a no-op.
CREATE TABLE IF NOT EXISTS processed_events (
    event_id     uuid        PRIMARY KEY,
    message_id   text        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
