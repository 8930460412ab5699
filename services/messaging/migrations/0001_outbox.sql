-- The transactional outbox: an event is written here in the same transaction as the state change that
-- caused it, and the relay publishes it to Kafka afterwards. Kafka being down therefore delays events
-- but never loses them, and a rolled-back change never publishes.
--
-- The table lives in the owning service's schema (pizza_messaging::migrate puts it first on the
-- search path), so every service has its own outbox.
create table outbox (
    -- Publication order: the relay publishes pending rows by ascending id, per record key.
    id bigserial primary key,
    -- CloudEvents attributes, kept as columns so the backlog can be read with plain sql.
    event_id uuid not null unique,
    event_source text not null,
    event_type text not null,
    event_time timestamptz not null,
    topic text not null,
    -- The record key and ce_subject: the order id.
    message_key text not null,
    -- The JSON body, byte for byte as it will be sent.
    payload bytea not null,
    -- W3C traceparent/tracestate of the span that wrote the row (never baggage), so the relay's
    -- send span continues the trace of the request that caused the event.
    trace_carrier jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    published_at timestamptz,
    -- Publish attempts that reached the broker's answer, and the last failure.
    attempts integer not null default 0,
    last_error text
);

-- The relay's scan and the per-key ordering check only ever look at pending rows.
create index outbox_pending on outbox (id) where published_at is null;
create index outbox_pending_by_key on outbox (message_key, id) where published_at is null;
