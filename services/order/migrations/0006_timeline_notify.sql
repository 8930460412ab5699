-- Every new timeline entry notifies `orders_timeline` with its order id, at commit, whichever replica
-- wrote it: the event streams of every order service process wake on it instead of polling.
create function orders.notify_timeline() returns trigger language plpgsql as $$
begin
    perform pg_notify('orders_timeline', new.order_id::text);
    return null;
end
$$;

create trigger timeline_notify after insert on orders.timeline
    for each row execute function orders.notify_timeline();
