-- A table for the infrastructure smoke test: proves sqlx migrations apply on the native PostgreSQL.
create table smoke_orders (
    id uuid primary key,
    pizza text not null,
    quantity integer not null check (quantity > 0),
    created_at timestamptz not null default now()
);
