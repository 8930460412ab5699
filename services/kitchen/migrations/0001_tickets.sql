-- The kitchen's tickets: one per order, and the ovens' whole state. The background loop reads this
-- table (never memory) to decide what to start and what is done, so a restarted kitchen carries on
-- where the last one stopped.
create table kitchen.tickets (
    ticket_id uuid primary key,
    -- The idempotency key of POST /tickets: one ticket per order.
    order_id uuid not null unique,
    -- The items as the request gave them ([{"pizza": "margherita", "quantity": 2}]).
    items jsonb not null,
    status text not null
        check (status in ('queued', 'cooking', 'ready', 'picked_up', 'cancelled', 'failed')),
    -- Why a ticket failed (a short code such as oven-failure), never free text.
    failure_reason text,
    -- W3C traceparent/tracestate of the request that created the ticket, so the work the ovens do
    -- later (another task, maybe another process) continues that request's trace.
    trace_carrier jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    started_at timestamptz,
    -- When the ticket in the oven is done; set when cooking starts.
    cook_until timestamptz,
    ready_at timestamptz,
    picked_up_at timestamptz,
    cancelled_at timestamptz
);

-- The oven loop's two scans: the queue in arrival order, and the ovens by finishing time.
create index tickets_queued on kitchen.tickets (created_at) where status = 'queued';
create index tickets_cooking on kitchen.tickets (cook_until) where status = 'cooking';
