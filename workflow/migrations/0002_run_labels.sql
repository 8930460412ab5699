-- Run labels replace the order id: the engine is generic and knows no pizza. A caller attaches
-- labels (attribute key -> value) when it starts a run; the engine stamps them on every span of the
-- run, and children inherit them (see `src/labels.rs`).
alter table workflow.runs add column labels jsonb not null default '{}'::jsonb;

-- Runs started before this migration kept the pizza shop's order id in its own column, the only
-- label there was; carry it over under the attribute key it was stamped as, so the spans of runs in
-- flight keep their `pizza.order.id`.
update workflow.runs set labels = jsonb_build_object('pizza.order.id', order_id) where order_id is not null;

alter table workflow.runs drop column order_id;
