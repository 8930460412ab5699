-- The number of an order's last timeline entry, kept on its row: a change reads and moves it under
-- the row's lock in the statement that adds the entry (store::advance), one round trip where the
-- lock and the entry's `max(seq)` were two. New orders start with entry 1 (`store::insert`).
alter table orders.orders add column timeline_seq integer not null default 1;

update orders.orders o set timeline_seq = t.last
from (select order_id, max(seq) as last from orders.timeline group by order_id) t
where t.order_id = o.order_id and t.last <> 1;
