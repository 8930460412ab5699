-- Wakes the relays when outbox rows are committed, instead of leaving them to poll (see
-- pizza_messaging::relay, "Waking up"). NOTIFY is transactional: it is delivered at commit, and only if
-- the transaction commits, so a woken relay always finds the rows. One channel for every service's
-- outbox in the database, the schema as the payload (a channel per schema could exceed PostgreSQL's
-- 63-byte channel names); PostgreSQL folds identical notifications of one transaction into one.
create function outbox_notify() returns trigger language plpgsql as $$
begin
    perform pg_notify('pizza_outbox', tg_table_schema);
    return null;
end
$$;

create trigger outbox_notify after insert on outbox for each statement execute function outbox_notify();
