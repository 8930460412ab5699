-- Wakes the oven loops instead of leaving them to poll (see pizza_kitchen::ovens, "Waking up"): a new
-- ticket may go into a free oven, and a cancelled ticket may have freed one. NOTIFY is delivered at
-- commit, only if the transaction commits, to every replica listening, so a woken loop finds the row.
-- The loop's own changes (start, ready, failed) need no notification: the round that makes them
-- looks again before it sleeps.
create function kitchen.notify_ovens() returns trigger language plpgsql as $$
begin
    perform pg_notify('kitchen_tickets', '');
    return null;
end
$$;

create trigger tickets_inserted after insert on kitchen.tickets
    for each statement execute function kitchen.notify_ovens();

create trigger tickets_cancelled after update of status on kitchen.tickets
    for each row when (old.status = 'cooking' and new.status = 'cancelled')
    execute function kitchen.notify_ovens();
