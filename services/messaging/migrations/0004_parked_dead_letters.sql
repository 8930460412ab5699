-- Dead letters that could not reach their `<topic>.dlq` (the topic is missing, the record too large for
-- it, the broker refuses it): after ConsumerConfig::dead_letter_attempts publishes the consumer keeps the
-- record here instead, logs an ERROR and moves on, so one unpublishable dead letter cannot stop its
-- partition. An operator fixes the cause and publishes the record back to `topic` (or to its .dlq),
-- then deletes the row. See pizza_messaging::consumer.
create table parked_dead_letters (
    id bigserial primary key,
    consumer_group text not null,
    topic text not null,
    kafka_partition integer not null,
    kafka_offset bigint not null,
    message_key bytea,
    payload bytea,
    -- The record's headers as they would have gone to the dead-letter topic (the original ones and the
    -- dlq_* ones), as [[name, value], ...]; a value that is not UTF-8 is kept as null.
    headers jsonb not null,
    -- Why the record was dead-lettered (the handler's or the decoder's error, never the body).
    error text not null,
    error_type text not null,
    attempts integer not null,
    -- Why publishing it to the dead-letter topic failed.
    publish_error text not null,
    parked_at timestamptz not null default now(),
    unique (consumer_group, topic, kafka_partition, kafka_offset)
);
