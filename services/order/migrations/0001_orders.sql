-- The order service's tables. The workflow engine keeps its own tables in the schema `workflow`; the
-- outbox and inbox live beside these (created by pizza-messaging).

create table orders.orders (
    order_id uuid primary key,
    -- Where the order stands; the terminal ones (completed, cancelled, rejected) are never left.
    status text not null check (status in ('accepted', 'paid', 'in_preparation', 'ready',
        'out_for_delivery', 'on_its_way', 'delivered', 'completed', 'cancelled', 'rejected')),
    -- Why an order was cancelled or rejected: a short code (kitchen-timeout), never free text.
    reason text,
    -- [{"pizza": "margherita", "quantity": 2}]
    items jsonb not null,
    total_cents bigint not null check (total_cents >= 0),
    -- Customer data: name, phone and address. It lives here and in the delivery request only; it is
    -- never copied into workflow inputs, spans, logs or metric labels.
    customer jsonb not null,
    -- The order-fulfillment run.
    run_id uuid,
    -- The trace of POST /orders, shown to the customer as a link to Jaeger.
    trace_id text not null,
    -- The client's Idempotency-Key: a retried POST returns the first order.
    idempotency_key text unique,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create index orders_recent on orders.orders (created_at desc);

-- Everything that happened to an order, in the order it was recorded; the SSE stream replays it.
create table orders.timeline (
    order_id uuid not null references orders.orders (order_id),
    seq integer not null,
    at timestamptz not null default now(),
    status text not null,
    -- What caused it: a CloudEvents type (order-ready) or a workflow step (payment-captured).
    event text not null,
    progress_percent smallint,
    primary key (order_id, seq)
);

-- The simulated payment provider's ledger: one row per operation, keyed by the workflow step's
-- idempotency key, so a retried or replayed step never charges twice.
create table orders.payments (
    idempotency_key text primary key,
    order_id uuid not null references orders.orders (order_id),
    operation text not null check (operation in ('authorize', 'capture', 'refund')),
    amount_cents bigint not null,
    at timestamptz not null default now()
);
