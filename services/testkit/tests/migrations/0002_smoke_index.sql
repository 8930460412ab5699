-- A second migration, so the test also sees migrations applied in order.
create index smoke_orders_created_at on smoke_orders (created_at);
