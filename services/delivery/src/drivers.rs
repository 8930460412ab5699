//! The drivers: a background loop that takes each due delivery one step further.
//!
//! ```text
//!  requested ──pickup 200──► on_the_way (order-out-for-delivery)
//!     │  409 not ready / kitchen down: ask again after pickup_retry, at most pickup_attempts times
//!     │  ticket cancelled or failed, or too many attempts: failed (delivery-issue)
//!  on_the_way ──each leg──► order-on-its-way (progress), ..., then delivered (order-completed)
//!     │  the `driver` business fault: failed (delivery-issue driver-failure)
//! ```
//!
//! Everything the loop needs is in the deliveries table (`status`, `progress_step`, `next_at`), so
//! a restarted service, or another replica, carries on. Each step runs inside a span whose parent is
//! the context stored when the request was consumed, so the pickup call and the events it publishes
//! stay in the order's trace.
//!
//! # Rounds and waking up
//! A round is one transaction: it locks up to [`STEP_BATCH`] due deliveries (`for update skip
//! locked`, so replicas share them), asks the kitchen for the batch's pickups all at once (each is a
//! round trip to another service; one at a time, a slow kitchen would hold back every drive behind
//! it), records each step and its event, and reads when the next step is due. The loop then sleeps
//! until that moment, or until the service says on [`NOTIFY_CHANNEL`] that a delivery was
//! requested; with nothing under way and nothing arriving it looks once per
//! [`Drivers::safety_net`].
//!
//! Only this service writes deliveries (its consumer of `delivery.requests`), so the consumer
//! announces its commit in memory ([`announce`]), not with a `NOTIFY`: the service holds no
//! listening connection, and its deliveries and outbox send nothing that every listening connection
//! of the shop's database would have to read in a transaction of its own (see
//! `pizza_notify::Source`; migration `0003_wake_in_process.sql` dropped the trigger). A round
//! announces its published events to the relay the same way. The price: a delivery requested
//! through another replica reaches this replica's loop at its safety net (the other replica's own
//! loop takes it at once).

use std::future::Future;
use std::time::Duration;

use futures::future::join_all;
use pizza_contracts::events::{
    DeliveryEvent, DeliveryIssue, OrderCompleted, OrderOnItsWay, OrderOutForDelivery,
};
use pizza_notify::{Notifications, Source};
use pizza_servicekit::effects::{self, Effects};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::{Instrument as _, Span};

use crate::kitchen_client::{KitchenClient, Pickup};
use crate::store::{self, DeliveryRow, StoreError};

/// The CloudEvents `source` of the service's events.
pub const EVENT_SOURCE: &str = "/pizza/delivery";
/// The business fault (`business_failure_rate.driver`) that ends a drive.
pub const DRIVER_FAULT: &str = "driver";
/// The channel on which the service tells its driver loop a delivery was requested ([`announce`]).
pub const NOTIFY_CHANNEL: &str = "delivery_deliveries";

/// Wakes this process's driver loop: call it after committing a requested delivery.
pub fn announce(pool: &PgPool) {
    Notifications::shared(pool).announce(NOTIFY_CHANNEL, "");
}
/// The most deliveries one round takes a step further; more due ones go in the next round, at once.
pub const STEP_BATCH: i64 = 32;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Steps taken (pickups tried, legs driven, deliveries ended).
    pub steps: usize,
    /// When the next step is due (zero if due deliveries were left for the next round); `None` when
    /// no delivery is under way.
    pub next_due: Option<Duration>,
}

/// `delivery-issue` reasons.
pub mod reasons {
    /// The driver fault fired.
    pub const DRIVER_FAILURE: &str = "driver-failure";
    /// The kitchen will never hand the order over (cancelled, failed, unknown ticket).
    pub const TICKET_UNAVAILABLE: &str = "ticket-unavailable";
    /// The order was not ready after every pickup attempt.
    pub const PICKUP_TIMEOUT: &str = "pickup-timeout";
}

/// The driver loop. See the module docs.
#[derive(Debug, Clone)]
pub struct Drivers {
    /// The service's database, the live fault plan (`driver`, `db_latency_ms`) and where its events
    /// go ([`EVENT_SOURCE`], `delivery.events`).
    pub effects: Effects,
    /// The kitchen.
    pub kitchen: KitchenClient,
    /// Position updates per delivery.
    pub updates: u32,
    /// Drive time per leg (scaled).
    pub leg_time: Duration,
    /// Wait between pickup attempts (scaled).
    pub pickup_retry: Duration,
    /// Pickup attempts before giving up.
    pub pickup_attempts: u32,
    /// The longest the loop sleeps without a notification or a step due (see "Rounds and waking
    /// up").
    pub safety_net: Duration,
}

impl Drivers {
    /// Runs rounds until `shutdown` completes, woken as the module docs say. A failed round is logged
    /// and tried again shortly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let pool = self.effects.pool.clone();
        pizza_servicekit::background::notified_rounds(
            "driver",
            (&pool, NOTIFY_CHANNEL, Source::Process),
            self.safety_net,
            shutdown,
            || async { Ok::<_, StoreError>(self.round().await?.next_due) },
        )
        .await;
    }

    /// One round, in one transaction: take every due delivery (a batch at most) one step further
    /// and say when the next step is due. Public so tests and tools can drive the loop by hand. A
    /// failed round changes nothing and is tried again whole.
    pub async fn round(&self) -> Result<Round, StoreError> {
        let mut tx = self.effects.begin().await?;
        let rows = store::lock_due(&mut *tx, STEP_BATCH).await?;
        let spans: Vec<Span> = rows
            .iter()
            .map(|row| {
                let name = if row.status == "requested" {
                    "delivery.pickup"
                } else {
                    "delivery.drive"
                };
                delivery_span(name, row)
            })
            .collect();
        // The kitchen's answers first, all at once; each call inside its delivery's span.
        let answers = join_all(rows.iter().zip(&spans).map(|(row, span)| async move {
            if row.status == "requested" {
                Some(self.kitchen.pickup(row.order_id).instrument(span.clone()).await)
            } else {
                None
            }
        }))
        .await;
        for ((row, span), answer) in rows.iter().zip(spans).zip(answers) {
            async {
                match answer {
                    Some(answer) => self.pickup(&mut tx, row, answer).await,
                    None => self.drive(&mut tx, row).await,
                }
            }
            .instrument(span)
            .await?;
        }
        let next_due = if rows.len() as i64 == STEP_BATCH {
            Some(Duration::ZERO)
        } else {
            pizza_servicekit::background::until_due(store::next_due_in(&mut *tx).await?)
        };
        tx.commit().await?;
        if !rows.is_empty() {
            // Most steps published an event (a pickup the kitchen refused did not).
            self.effects.announce_published();
        }
        Ok(Round {
            steps: rows.len(),
            next_due,
        })
    }

    /// Records the kitchen's answer to a pickup.
    async fn pickup(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeliveryRow,
        answer: Pickup,
    ) -> Result<(), StoreError> {
        match answer {
            Pickup::PickedUp => {
                store::mark_picked_up(&mut **tx, row.delivery_id, self.leg_time.as_secs_f64()).await?;
                tracing::info!(delivery_id = %row.delivery_id, "order picked up");
                self.publish(
                    tx,
                    OrderOutForDelivery {
                        order_id: row.order_id,
                        delivery_id: row.delivery_id,
                    }
                    .into(),
                )
                .await
            }
            Pickup::NotYet(why) if (row.pickup_attempts as u32) + 1 < self.pickup_attempts => {
                tracing::info!(delivery_id = %row.delivery_id, attempt = row.pickup_attempts + 1, %why, "pickup not possible yet");
                store::retry_pickup(&mut **tx, row.delivery_id, self.pickup_retry.as_secs_f64()).await?;
                Ok(())
            }
            Pickup::NotYet(why) => {
                tracing::warn!(delivery_id = %row.delivery_id, %why, "giving up on the pickup");
                self.fail(tx, row, reasons::PICKUP_TIMEOUT).await
            }
            Pickup::Unavailable(why) => {
                tracing::warn!(delivery_id = %row.delivery_id, %why, "the kitchen will not hand the order over");
                self.fail(tx, row, reasons::TICKET_UNAVAILABLE).await
            }
        }
    }

    async fn drive(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeliveryRow,
    ) -> Result<(), StoreError> {
        if self.effects.faults.business_failure(DRIVER_FAULT) {
            tracing::warn!(delivery_id = %row.delivery_id, "driver failed (fault plan)");
            return self.fail(tx, row, reasons::DRIVER_FAILURE).await;
        }
        let step = row.progress_step + 1;
        if step as u32 <= self.updates {
            store::advance(&mut **tx, row.delivery_id, step, self.leg_time.as_secs_f64()).await?;
            let progress_percent = progress(step as u32, self.updates);
            self.publish(
                tx,
                OrderOnItsWay {
                    order_id: row.order_id,
                    delivery_id: row.delivery_id,
                    progress_percent,
                }
                .into(),
            )
            .await
        } else {
            store::mark_delivered(&mut **tx, row.delivery_id).await?;
            tracing::info!(delivery_id = %row.delivery_id, "order delivered");
            self.publish(
                tx,
                OrderCompleted {
                    order_id: row.order_id,
                    delivery_id: row.delivery_id,
                }
                .into(),
            )
            .await
        }
    }

    async fn fail(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        row: &DeliveryRow,
        reason: &'static str,
    ) -> Result<(), StoreError> {
        effects::fail_current(reason);
        store::mark_failed(&mut **tx, row.delivery_id, reason).await?;
        self.publish(
            tx,
            DeliveryIssue {
                order_id: row.order_id,
                delivery_id: row.delivery_id,
                reason: reason.to_owned(),
            }
            .into(),
        )
        .await
    }

    async fn publish(
        &self,
        tx: &mut Transaction<'static, Postgres>,
        event: DeliveryEvent,
    ) -> Result<(), StoreError> {
        Ok(self.effects.publish(tx, event).await?)
    }
}

/// Progress after update `step` of `updates`: evenly spaced below 100 (100 is the handover).
pub fn progress(step: u32, updates: u32) -> u8 {
    (step.min(updates) * 100 / (updates + 1)) as u8
}

/// An INTERNAL span for a step of a delivery, continuing the trace of the request that asked for it.
fn delivery_span(name: &'static str, row: &DeliveryRow) -> Span {
    let span = tracing::info_span!(
        "delivery.step",
        otel.name = name,
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
    );
    effects::continue_stored(&span, &row.trace_carrier.0, row.order_id);
    span
}

#[cfg(test)]
mod tests {
    use super::progress;

    #[test]
    fn progress_climbs_evenly_and_stays_below_the_handover() {
        assert_eq!(
            (1..=4).map(|s| progress(s, 4)).collect::<Vec<_>>(),
            vec![20, 40, 60, 80]
        );
        assert_eq!(progress(1, 1), 50);
        assert_eq!(progress(99, 99), 99);
    }
}
