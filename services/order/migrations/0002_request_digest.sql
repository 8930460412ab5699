-- An Idempotency-Key is scoped by the request it came with: a SHA-256 of the validated request
-- (customer and items). The same key with another request is refused (422) instead of answering with
-- someone else's order. Orders placed before this column existed have none and are compared by items.
alter table orders.orders add column request_digest bytea;
