-- Wakes the driver loops when a delivery is requested, instead of leaving them to poll (see
-- pizza_delivery::drivers, "Waking up"). NOTIFY is delivered at commit, only if the transaction
-- commits, to every replica listening, so a woken loop finds the row. Later steps of a delivery
-- are scheduled by `next_at`, which the loop reads before it sleeps.
create function delivery.notify_drivers() returns trigger language plpgsql as $$
begin
    perform pg_notify('delivery_deliveries', '');
    return null;
end
$$;

create trigger deliveries_inserted after insert on delivery.deliveries
    for each statement execute function delivery.notify_drivers();
