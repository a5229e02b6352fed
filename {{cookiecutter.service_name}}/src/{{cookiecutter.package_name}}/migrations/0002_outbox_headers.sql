-- What travels with an event besides its payload (W3C trace context when tracing is on): the
-- relay publishes it as the stream entry's `headers` field.
ALTER TABLE outbox ADD COLUMN headers jsonb NOT NULL DEFAULT '{}';
