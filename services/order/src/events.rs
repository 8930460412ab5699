//! What the order service consumes: `kitchen.events` and `delivery.events`.
//!
//! Each event moves the order's status and timeline (in the consumer's transaction, so the inbox's
//! dedupe and the change commit together), and the ones the workflow waits for become signals, in
//! that same transaction: `order-ready` and `kitchen-issue` → `kitchen-ready`; `order-completed` and
//! `delivery-issue` → `delivered`. A signal carries the event id as its idempotency key, so a redelivered event signals
//! once. The signal is sent from inside the `process` span, so in `continuous` it joins the order's
//! trace, and the workflow's wait links to it in both topologies.
//!
//! A batch of events the consumer fetched together is applied in a few statements, not one to three
//! an event ([`Handler::handle_batch`]): the order service's consumer carries every kitchen and
//! delivery event, about eight an order, and under load its round trips, one after another, were
//! where the shop's orders queued (see `docs/decisions.md`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pizza_contracts::events::{DataError, DeliveryEvent, EventData, KitchenEvent};
use pizza_messaging::{BatchError, Batched, Envelope, Handler, HandlerError};
use pizza_workflow::{Engine, Signal};
use sqlx::{Postgres, Transaction};
use uuid::Uuid;

use crate::fulfillment::{DELIVERED, KITCHEN_READY, Report};
use crate::store::{self, Change, Status};

/// Everything the order service reads: the kitchen's and the delivery's events.
#[derive(Debug, Clone, PartialEq)]
pub enum Inbound {
    /// From `kitchen.events`.
    Kitchen(KitchenEvent),
    /// From `delivery.events`.
    Delivery(DeliveryEvent),
}

impl EventData for Inbound {
    fn event_type(&self) -> &'static str {
        match self {
            Inbound::Kitchen(e) => e.event_type(),
            Inbound::Delivery(e) => e.event_type(),
        }
    }
    fn topic(&self) -> &'static str {
        match self {
            Inbound::Kitchen(e) => e.topic(),
            Inbound::Delivery(e) => e.topic(),
        }
    }
    fn order_id(&self) -> Uuid {
        match self {
            Inbound::Kitchen(e) => e.order_id(),
            Inbound::Delivery(e) => e.order_id(),
        }
    }
    fn to_json(&self) -> Result<Vec<u8>, serde_json::Error> {
        match self {
            Inbound::Kitchen(e) => e.to_json(),
            Inbound::Delivery(e) => e.to_json(),
        }
    }
    fn from_json(event_type: &str, body: &[u8]) -> Result<Self, DataError> {
        if KitchenEvent::TYPES.contains(&event_type) {
            return KitchenEvent::from_json(event_type, body).map(Inbound::Kitchen);
        }
        if DeliveryEvent::TYPES.contains(&event_type) {
            return DeliveryEvent::from_json(event_type, body).map(Inbound::Delivery);
        }
        Err(DataError::UnexpectedType {
            found: event_type.to_owned(),
            expected: &[
                pizza_contracts::types::ORDER_IN_PREPARATION,
                pizza_contracts::types::ORDER_READY,
                pizza_contracts::types::KITCHEN_ISSUE,
                pizza_contracts::types::ORDER_OUT_FOR_DELIVERY,
                pizza_contracts::types::ORDER_ON_ITS_WAY,
                pizza_contracts::types::ORDER_COMPLETED,
                pizza_contracts::types::DELIVERY_ISSUE,
            ],
        })
    }
}

/// The consumer's handler.
#[derive(Debug, Clone)]
pub struct Progress {
    /// The workflow engine, for signals.
    engine: Engine,
    /// Whether a transaction since the last commit signalled a run: only then does the commit wake
    /// the workers (most events only move the status, and a wake makes an idle worker claim).
    signalled: Arc<AtomicBool>,
}

impl Progress {
    /// The handler, signalling runs of `engine`.
    pub fn new(engine: Engine) -> Self {
        Self {
            engine,
            signalled: Arc::default(),
        }
    }
}

/// What an event does to its order: the change, and the signal the workflow waits for, if any.
fn plan(event: &Inbound) -> (Change<'_>, Option<(&'static str, Report)>) {
    let event_type = event.event_type();
    match event {
        Inbound::Kitchen(KitchenEvent::InPreparation(_)) => {
            (Change::to(Status::InPreparation, event_type), None)
        }
        Inbound::Kitchen(KitchenEvent::Ready(_)) => (
            Change::to(Status::Ready, event_type),
            Some((KITCHEN_READY, Report::ok())),
        ),
        Inbound::Kitchen(KitchenEvent::Issue(issue)) => (
            // A note on the timeline; the workflow decides what the order becomes.
            Change::to(Status::Accepted, event_type),
            Some((KITCHEN_READY, Report::failed(&issue.reason))),
        ),
        Inbound::Delivery(DeliveryEvent::OutForDelivery(_)) => {
            (Change::to(Status::OutForDelivery, event_type), None)
        }
        Inbound::Delivery(DeliveryEvent::OnItsWay(update)) => (
            Change {
                progress_percent: Some(update.progress_percent.min(100)),
                ..Change::to(Status::OnItsWay, event_type)
            },
            None,
        ),
        Inbound::Delivery(DeliveryEvent::Completed(_)) => (
            Change::to(Status::Delivered, event_type),
            Some((DELIVERED, Report::ok())),
        ),
        Inbound::Delivery(DeliveryEvent::Issue(issue)) => (
            Change::to(Status::Accepted, event_type),
            Some((DELIVERED, Report::failed(&issue.reason))),
        ),
    }
}

impl Progress {
    /// Applies `records` in order: every status change in a statement per change an order has in
    /// the batch (`store::advance_all`), then every signal in two (`Engine::signal_all_in`), each
    /// signal's send span in its record's span. The same effect as one record after another: the
    /// changes to one order keep their order, and nothing reads what a signal writes before the
    /// commit. A handful of round trips for a batch where one at a time took one or three a record.
    async fn apply(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[Batched<'_, Inbound>],
    ) -> Result<(), BatchError> {
        let plans: Vec<_> = records.iter().map(|r| plan(&r.event.data)).collect();
        let changes: Vec<(Uuid, Change<'_>)> = records
            .iter()
            .zip(&plans)
            .map(|(r, (change, _))| (r.event.data.order_id(), *change))
            .collect();
        let advanced = store::advance_all(tx, &changes)
            .await
            .map_err(|error| BatchError {
                index: 0,
                error: HandlerError::retry(error),
            })?;
        // The signals to send, and the record each is for.
        let mut wanted: Vec<(usize, Uuid, &'static str, &Report, String)> = Vec::new();
        for (index, ((record, (_, signal)), advanced)) in records.iter().zip(&plans).zip(advanced).enumerate()
        {
            let order_id = record.event.data.order_id();
            let event_type = record.event.data.event_type();
            let Some(advanced) = advanced else {
                // Not one of ours (another shop on the same topic, or a test's leftover): nothing to do.
                record.span.in_scope(
                    || tracing::warn!(%order_id, event_type, "event for an unknown order; ignored"),
                );
                continue;
            };
            let Some((name, report)) = signal else {
                continue;
            };
            if advanced.before.is_terminal() {
                continue;
            }
            let run_id = advanced.run_id.ok_or_else(|| BatchError {
                index,
                error: HandlerError::reject(format!("order {order_id} has no workflow run")),
            })?;
            wanted.push((index, run_id, name, report, record.event.id().to_string()));
        }
        if wanted.is_empty() {
            return Ok(());
        }
        // The event id is the signal's idempotency key: a redelivered event signals once.
        let signals: Vec<Signal<'_, Report>> = wanted
            .iter()
            .map(|(index, run_id, name, report, key)| Signal {
                run_id: *run_id,
                name,
                payload: *report,
                idempotency_key: Some(key),
                parent: records[*index].span,
            })
            .collect();
        // In the consumer's transaction: the status changes, the inbox entries and the signals
        // commit together, once.
        let answers = self
            .engine
            .signal_all_in(tx, &signals)
            .await
            .map_err(|error| BatchError {
                index: wanted[0].0,
                error: HandlerError::retry(error),
            })?;
        for (answer, (index, ..)) in answers.into_iter().zip(&wanted) {
            let record = &records[*index];
            let order_id = record.event.data.order_id();
            let event_type = record.event.data.event_type();
            match answer {
                Ok(_) => self.signalled.store(true, Ordering::Relaxed),
                // The order's workflow ended (a timeout won the race): the event is late, not wrong.
                Err(pizza_workflow::Error::RunFinished(_)) => record
                    .span
                    .in_scope(|| tracing::info!(%order_id, event_type, "late event for an ended workflow")),
                Err(pizza_workflow::Error::NotFound(run)) => {
                    return Err(BatchError {
                        index: *index,
                        error: HandlerError::reject(format!(
                            "workflow run {run} of order {order_id} does not exist"
                        )),
                    });
                }
                Err(error) => {
                    return Err(BatchError {
                        index: *index,
                        error: HandlerError::retry(error),
                    });
                }
            }
        }
        Ok(())
    }
}

impl Handler for Progress {
    type Event = Inbound;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<Inbound>,
    ) -> Result<(), HandlerError> {
        let span = tracing::Span::current();
        let record = Batched { event, span: &span };
        self.apply(tx, std::slice::from_ref(&record))
            .await
            .map_err(|failed| failed.error)
    }

    async fn handle_batch(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        records: &[Batched<'_, Inbound>],
    ) -> Result<(), BatchError> {
        self.apply(tx, records).await
    }

    /// The signals of the committed transaction make their runs due: this process's workers take
    /// them at once (the engine sends no `NOTIFY`; see `EngineBuilder::wakes`).
    fn committed(&self) {
        // A flag left by a transaction that rolled back costs one empty claim, nothing more.
        if self.signalled.swap(false, Ordering::Relaxed) {
            self.engine.wake();
        }
    }
}

#[cfg(test)]
mod tests {
    use pizza_contracts::events::{OrderOnItsWay, OrderReady};

    use super::*;

    #[test]
    fn both_topics_decode_by_type_and_others_are_refused() {
        let order_id = Uuid::now_v7();
        let ready = OrderReady {
            order_id,
            ticket_id: Uuid::now_v7(),
        };
        let body = ready.to_json().unwrap();
        assert_eq!(
            Inbound::from_json("order-ready", &body).unwrap(),
            Inbound::Kitchen(KitchenEvent::Ready(ready))
        );
        let update = OrderOnItsWay {
            order_id,
            delivery_id: Uuid::now_v7(),
            progress_percent: 50,
        };
        let body = update.to_json().unwrap();
        let decoded = Inbound::from_json("order-on-its-way", &body).unwrap();
        assert_eq!(decoded.order_id(), order_id);
        assert_eq!(decoded.topic(), "delivery.events");
        assert!(matches!(
            Inbound::from_json("order-placed", b"{}"),
            Err(DataError::UnexpectedType { .. })
        ));
        assert!(matches!(
            Inbound::from_json("order-ready", b"{"),
            Err(DataError::Json { .. })
        ));
    }
}
