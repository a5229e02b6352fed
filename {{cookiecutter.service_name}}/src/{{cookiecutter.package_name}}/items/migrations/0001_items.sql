-- Items. Their events go through the platform's outbox (platform/sql/0000_outbox.sql), and the
-- consumer's effect sets `processed_at`.
CREATE TABLE IF NOT EXISTS items (
    id              bigserial PRIMARY KEY,
    name            text        NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    quantity        integer     NOT NULL CHECK (quantity >= 0),
    idempotency_key text        UNIQUE,
    created_at      timestamptz NOT NULL DEFAULT now(),
    -- set by the consumer when it handled the item's item.created event
    processed_at    timestamptz
);
