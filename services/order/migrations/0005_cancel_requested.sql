-- A customer's cancel that arrived before the delivery was requested. request-delivery reads it under
-- the order's row lock and refuses to ask for a driver: no pizza leaves with a cancel on file.
alter table orders.orders add column cancel_requested_at timestamptz;
