-- The ovens are woken in memory by the kitchen's own commits (see pizza_kitchen::ovens, "Waking up"),
-- not by NOTIFY: PostgreSQL made every listening connection of the shop's database (one per service)
-- read each of these notifications in a transaction of its own, whoever listened for them. Only the
-- kitchen writes tickets, so nothing else needs to hear of them.
drop trigger tickets_cancelled on kitchen.tickets;
drop trigger tickets_inserted on kitchen.tickets;
drop function kitchen.notify_ovens();
