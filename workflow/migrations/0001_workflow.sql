-- The durable workflow engine's state. Three tables, all in the `workflow` schema, which the engine
-- owns: its migration history lives there too (`workflow._sqlx_migrations`), so it never collides
-- with the migrations of the service that embeds the engine.

-- One row per workflow run. `available_at` is the only clock a worker reads:
--   pending / sleeping: the run may be claimed once `available_at` has passed (the row is the timer);
--   running:            `available_at` is the lease expiry, pushed forward by heartbeats; a run whose
--                       lease expired is claimable again (its worker died or lost the database).
create table workflow.runs (
    id                  uuid primary key,
    workflow_name       text not null,
    status              text not null
        check (status in ('pending', 'running', 'sleeping', 'completed', 'failed', 'cancelled')),
    input               jsonb not null,
    output              jsonb,
    error               jsonb,
    -- Starting twice with the same key returns the first run (per workflow name).
    idempotency_key     text,
    parent_run_id       uuid references workflow.runs (id),
    available_at        timestamptz not null,
    lease_owner         text,
    -- Claims so far; also the fencing token: every write of an execution checks it still holds it.
    executions          integer not null default 0,
    -- The `workflow_run.create` span's context, W3C traceparent/tracestate only (never baggage).
    traceparent         text,
    tracestate          text,
    -- What woke the run last (a signal, a child, the previous execution's timer), for the next
    -- execution's span link.
    wake_traceparent    text,
    wake_tracestate     text,
    wake_reason         text,
    -- Bumped by everything that wakes a run from outside (a signal, a child's end, a cancel). An
    -- execution that parks compares it with the value it claimed: if it moved, something arrived
    -- during the execution, and the run is made due at once instead of sleeping through it.
    wake_seq            bigint not null default 0,
    -- The order the run belongs to (`pizza.order.id` on every span of the run); children inherit it.
    order_id            text,
    created_at          timestamptz not null,
    started_at          timestamptz,
    finished_at         timestamptz,
    deadline_at         timestamptz,
    cancel_requested_at timestamptz,
    -- A cancellation or deadline delivered to the workflow code, and at which step boundary, so that
    -- replay raises it again at the same point.
    interrupt_kind      text check (interrupt_kind in ('cancelled', 'deadline_exceeded')),
    interrupt_step      integer,
    unique (workflow_name, idempotency_key)
);

-- The claim query's path: runnable runs by due time.
create index runs_due on workflow.runs (available_at)
    where status in ('pending', 'running', 'sleeping');
create index runs_parent on workflow.runs (parent_run_id) where parent_run_id is not null;

-- One row per step attempt (and one per wait). Replay reads these back in step order.
create table workflow.step_attempts (
    id          bigserial primary key,
    run_id      uuid not null references workflow.runs (id),
    step_index  integer not null,
    step_name   text not null,
    kind        text not null
        check (kind in ('run', 'sleep', 'run_workflow', 'wait_for_signal', 'send_signal')),
    attempt     integer not null,
    status      text not null check (status in ('running', 'waiting', 'completed', 'failed')),
    output      jsonb,
    error       jsonb,
    -- A failed attempt with `retry_at` will be retried then; without it the step failed for good.
    retry_at    timestamptz,
    -- Waits: when the timer (sleep end, signal timeout, child timeout) fires.
    wake_at     timestamptz,
    -- run_workflow: the child run.
    child_run_id uuid references workflow.runs (id),
    started_at  timestamptz not null,
    finished_at timestamptz,
    unique (run_id, step_index, attempt)
);

-- The engine's central promise, enforced by the database: a step completes at most once.
create unique index step_attempts_completed_once on workflow.step_attempts (run_id, step_index)
    where status = 'completed';

-- The signal mailbox. A wait consumes the oldest unconsumed signal of its name, whenever it was sent.
create table workflow.signals (
    id               bigserial primary key,
    run_id           uuid not null references workflow.runs (id),
    signal_name      text not null,
    payload          jsonb not null,
    -- Sending twice with the same key stores one signal.
    idempotency_key  text unique,
    sent_at          timestamptz not null,
    consumed_by_step integer,
    consumed_at      timestamptz,
    -- The `workflow.signal.send` span, for the link from the wait that receives it.
    traceparent      text,
    tracestate       text
);

create index signals_mailbox on workflow.signals (run_id, signal_name, id) where consumed_by_step is null;
