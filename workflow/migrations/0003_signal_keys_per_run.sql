-- A signal's idempotency key is scoped to the run it signals, as the engine documents ("sending twice
-- with the same key stores one signal" means: to the same run). A key unique across all runs made
-- the second of two runs signalled with the same key (say, an event id that fans out to several
-- runs) silently lose its signal.
alter table workflow.signals drop constraint signals_idempotency_key_key;
alter table workflow.signals add constraint signals_run_idempotency_key unique (run_id, idempotency_key);
