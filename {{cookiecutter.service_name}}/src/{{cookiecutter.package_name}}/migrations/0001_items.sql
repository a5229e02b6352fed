-- Items, the transactional outbox that publishes their events, and the consumer's effects.
CREATE TABLE items (
    id              bigserial PRIMARY KEY,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    quantity        integer     NOT NULL CHECK (quantity >= 0),
    idempotency_key text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- set by the consumer when it handled the item's item.created event
    processed_at    timestamptz
);

-- Written in the same transaction as the row it announces; the relay publishes it to the
-- Redis stream and deletes it. A rolled-back row has no outbox entry; a committed one always has.
CREATE TABLE outbox (
    id         bigserial   PRIMARY KEY,
    event_id   uuid        NOT NULL UNIQUE,
    stream     text        NOT NULL,
    event_type text        NOT NULL,
    payload    jsonb       NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
);

-- One row per handled event, written in the same transaction as the effect: the primary key
-- makes a redelivered (or republished) event a no-op.
CREATE TABLE processed_events (
    event_id     uuid        PRIMARY KEY,
    message_id   text        NOT NULL,
    event_type   text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now()
);
