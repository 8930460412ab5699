-- The delivery service's trips: one per order, and the drivers' whole state. The background loop
-- reads this table (never memory) to decide what to do next, so a restarted service resumes every
-- trip where it stood. The address is not stored: the simulation does not need it, and what is not
-- kept cannot leak.
create table delivery.deliveries (
    delivery_id uuid primary key,
    -- One delivery per order: a redelivered request finds its row.
    order_id uuid not null unique,
    ticket_id uuid not null,
    status text not null
        check (status in ('requested', 'on_the_way', 'delivered', 'failed')),
    -- Position updates sent so far (0 right after pickup).
    progress_step integer not null default 0,
    -- Pickup attempts the kitchen answered "not yet" (or not at all).
    pickup_attempts integer not null default 0,
    -- When the loop should look at this delivery next (pickup retry, next leg of the drive).
    next_at timestamptz not null default now(),
    -- Why it failed (a short code such as driver-failure), never free text.
    failure_reason text,
    -- W3C traceparent/tracestate of the span that accepted the request, continued by the drive.
    trace_carrier jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    picked_up_at timestamptz,
    delivered_at timestamptz
);

create index deliveries_due on delivery.deliveries (next_at) where status in ('requested', 'on_the_way');
