-- The driver loop is woken in memory by the delivery's own commits (see pizza_delivery::drivers,
-- "Rounds and waking up"), not by NOTIFY: PostgreSQL made every listening connection of the shop's
-- database (one per service) read each of these notifications in a transaction of its own, whoever
-- listened for them. Only the delivery service writes deliveries, so nothing else needs to hear of
-- them.
drop trigger deliveries_inserted on delivery.deliveries;
drop function delivery.notify_drivers();
