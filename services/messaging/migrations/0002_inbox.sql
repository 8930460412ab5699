-- The inbox: one row per event a consumer group has applied, written in the same transaction as the
-- handler's effect. A redelivered event (Kafka is at-least-once) finds its row and is skipped, so its
-- effect happens once.
create table inbox (
    consumer_group text not null,
    event_id uuid not null,
    event_type text not null,
    topic text not null,
    kafka_partition integer not null,
    kafka_offset bigint not null,
    processed_at timestamptz not null default now(),
    primary key (consumer_group, event_id)
);

-- Pruning old rows (older than the topics' retention) reads by time.
create index inbox_processed_at on inbox (processed_at);
