//! What the order service consumes: `kitchen.events` and `delivery.events`.
//!
//! Each event moves the order's status and timeline (in the consumer's transaction, so the inbox's
//! dedupe and the change commit together), and the ones the workflow waits for become signals, in
//! that same transaction: `order-ready` and `kitchen-issue` → `kitchen-ready`; `order-completed` and
//! `delivery-issue` → `delivered`. A signal carries the event id as its idempotency key, so a redelivered event signals
//! once. The signal is sent from inside the `process` span, so in `continuous` it joins the order's
//! trace, and the workflow's wait links to it in both topologies.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use pizza_contracts::events::{DataError, DeliveryEvent, EventData, KitchenEvent};
use pizza_messaging::{Envelope, Handler, HandlerError};
use pizza_workflow::Engine;
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

impl Handler for Progress {
    type Event = Inbound;

    async fn handle(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: &Envelope<Inbound>,
    ) -> Result<(), HandlerError> {
        let order_id = event.data.order_id();
        let event_type = event.data.event_type();
        let (change, signal) = match &event.data {
            Inbound::Kitchen(KitchenEvent::InPreparation(_)) => {
                (Change::to(Status::InPreparation, event_type), None)
            }
            Inbound::Kitchen(KitchenEvent::Ready(_)) => (
                Change::to(Status::Ready, event_type),
                Some((
                    KITCHEN_READY,
                    Report {
                        ok: true,
                        reason: None,
                    },
                )),
            ),
            Inbound::Kitchen(KitchenEvent::Issue(issue)) => (
                // A note on the timeline; the workflow decides what the order becomes.
                Change::to(Status::Accepted, event_type),
                Some((
                    KITCHEN_READY,
                    Report {
                        ok: false,
                        reason: Some(issue.reason.clone()),
                    },
                )),
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
                Some((
                    DELIVERED,
                    Report {
                        ok: true,
                        reason: None,
                    },
                )),
            ),
            Inbound::Delivery(DeliveryEvent::Issue(issue)) => (
                Change::to(Status::Accepted, event_type),
                Some((
                    DELIVERED,
                    Report {
                        ok: false,
                        reason: Some(issue.reason.clone()),
                    },
                )),
            ),
        };
        let Some(advanced) = store::advance(tx, order_id, change)
            .await
            .map_err(HandlerError::retry)?
        else {
            // Not one of ours (another shop on the same topic, or a test's leftover): nothing to do.
            tracing::warn!(%order_id, event_type, "event for an unknown order; ignored");
            return Ok(());
        };
        let Some((name, report)) = signal else {
            return Ok(());
        };
        if advanced.before.is_terminal() {
            return Ok(());
        }
        let run_id = advanced
            .run_id
            .ok_or_else(|| HandlerError::reject(format!("order {order_id} has no workflow run")))?;
        let key = event.id().to_string();
        // In the consumer's transaction: the status change, the inbox entry and the signal commit
        // together, once.
        match self.engine.signal_in(tx, run_id, name, &report, Some(&key)).await {
            Ok(_) => {
                self.signalled.store(true, Ordering::Relaxed);
                Ok(())
            }
            // The order's workflow ended (a timeout won the race): the event is late, not wrong.
            Err(pizza_workflow::Error::RunFinished(_)) => {
                tracing::info!(%order_id, event_type, "late event for an ended workflow");
                Ok(())
            }
            Err(pizza_workflow::Error::NotFound(run)) => Err(HandlerError::reject(format!(
                "workflow run {run} of order {order_id} does not exist"
            ))),
            Err(error) => Err(HandlerError::retry(error)),
        }
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
