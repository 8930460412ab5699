-- on_hold: the order's workflow ended without ending the order while the ledger holds a capture and no
-- refund. Nothing automatic moves such an order (cancelling it would keep the money; completing it
-- would claim a pizza nobody knows was delivered): an operator settles it.
alter table orders.orders drop constraint orders_status_check;
alter table orders.orders add constraint orders_status_check check (status in ('accepted', 'paid',
    'in_preparation', 'ready', 'out_for_delivery', 'on_its_way', 'delivered', 'completed', 'cancelled',
    'rejected', 'on_hold'));
