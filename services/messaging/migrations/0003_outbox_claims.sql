-- The relay claims rows instead of holding them locked across the Kafka round trip, gives up on rows
-- the broker keeps refusing, and purges published rows through an index (see pizza_messaging::relay).
--
-- A pending row (published_at and dead_at null) is in one of three states:
--   available   available_at is null or past: the next relay round may claim it;
--   claimed     claimed_by names the relay publishing it, available_at is the end of its claim (a
--               relay that dies leaves the claim to expire; one that restarts with the same name
--               takes its claims back at once);
--   backing off claimed_by is null, available_at is when the relay tries it again after a refusal.
-- A row that is claimed or backing off holds back the later rows of its topic and key, so they never
-- overtake it. So does a dead row, until an operator requeues it (Outbox::requeue) or deletes it.
alter table outbox
    add column claimed_by text,
    add column available_at timestamptz,
    -- Sends the broker or the producer refused for the row itself (too large, unknown topic, ...),
    -- as opposed to failures of the producer or the broker as a whole, which never count.
    add column refusals integer not null default 0,
    -- When the relay gave up on the row after RelayConfig::max_refusals refusals. last_error says why.
    add column dead_at timestamptz;

-- Dead rows are few and looked up per key by every claim: a small index keeps that cheap.
create index outbox_dead on outbox (topic, message_key, id) where dead_at is not null;
-- Purging old published rows reads them by age; without this the purge scans the whole table.
create index outbox_published_at on outbox (published_at) where published_at is not null;
