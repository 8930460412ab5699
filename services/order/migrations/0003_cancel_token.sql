-- The capability to cancel an order: POST /orders hands a random token to whoever placed the order,
-- once; only its SHA-256 is kept, so the table never holds a usable token. Orders placed before this
-- column existed have none and cannot be cancelled by a customer.
alter table orders.orders add column cancel_token_hash bytea;
