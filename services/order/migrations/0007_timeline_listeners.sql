-- The timeline's NOTIFY goes out only while some order service process serves event streams.
--
-- PostgreSQL signals every listening connection of the database for every notifying commit,
-- whatever the channel, and each reads the queue in a transaction of its own; a notifying commit
-- also takes the cluster-wide notification queue lock. Every timeline entry notified, so every
-- step and event of every order cost the database that, whether or not anyone followed an order.
-- A process registers here while it has streams open (`http::feed`, renewed well before `until`),
-- and the trigger notifies only while a registration is current.
create table orders.timeline_listeners (
    listener text primary key,
    until timestamptz not null
);

create or replace function orders.notify_timeline() returns trigger language plpgsql as $$
begin
    if exists (select 1 from orders.timeline_listeners where until > now()) then
        perform pg_notify('orders_timeline', new.order_id::text);
    end if;
    return null;
end
$$;
