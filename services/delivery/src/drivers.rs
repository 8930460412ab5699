//! The drivers: background loops that take each due delivery one step further.
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
//! A round is one transaction: it locks up to [`STEP_BATCH`] due deliveries of its lane (`for
//! update skip locked`, so replicas share them), asks the kitchen for the batch's pickups all at
//! once (each is a round trip to another service; one at a time, a slow kitchen would hold back
//! every pickup behind it), decides each step inside its delivery's span, writes every step's
//! change in one statement and every step's event in another ([`store::apply`],
//! [`Effects::publish_all`]), and reads when the lane's next step is due. The loop then sleeps until
//! that moment, or until it is woken: the pickups when the service says on [`NOTIFY_CHANNEL`] that a
//! delivery was requested, the drives when a pickup round put one on the way ([`DRIVES_CHANNEL`]);
//! with nothing under way and nothing arriving each looks once per [`Drivers::safety_net`].
//!
//! # Two lanes
//! Pickups and drives run in rounds of their own, side by side ([`Lane`]). A pickup waits on the
//! kitchen; a leg of a drive waits on nothing but the database. In one round, every drive waited for
//! the slowest pickup of its batch, and the round's 32 steps were 64 statements one after another:
//! at 100 orders/s (600 steps a second) the loop could not keep its schedule, and each 0.3 s leg
//! arrived 0.57 s after the last at the median (`pizza-load bench`, "Where a completed order's
//! end-to-end time went"). A step's span now ends once the step is decided, before the round's
//! writes: the writes are the round's, one statement for all of its steps.
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
use pizza_messaging::outbox::current_carrier;
use pizza_notify::{Notifications, Source};
use pizza_servicekit::background::Stop;
use pizza_servicekit::effects::{self, Effects};
use sqlx::PgPool;
use tracing::{Instrument as _, Span};

use crate::kitchen_client::{KitchenClient, Pickup};
use crate::store::{self, DeliveryRow, StoreError};

/// The CloudEvents `source` of the service's events.
pub const EVENT_SOURCE: &str = "/pizza/delivery";
/// The business fault (`business_failure_rate.driver`) that ends a drive.
pub const DRIVER_FAULT: &str = "driver";
/// The channel on which the service tells its pickups a delivery was requested ([`announce`]).
pub const NOTIFY_CHANNEL: &str = "delivery_deliveries";

/// Wakes this process's pickups: call it after committing a requested delivery.
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

/// The drivers: two loops, pickups and drives (see the module docs).
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

/// What a round takes a step further: deliveries waiting for their pickup, or deliveries on the
/// way. Each lane runs rounds of its own (see "Two lanes" in the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lane {
    /// `requested`: each step is a call to the kitchen.
    Pickups,
    /// `on_the_way`: each step is the database's alone.
    Drives,
}

impl Lane {
    /// The deliveries the lane takes.
    pub fn due(self) -> store::Due {
        match self {
            Lane::Pickups => store::Due::Pickups,
            Lane::Drives => store::Due::Drives,
        }
    }

    /// What wakes the lane's loop ([`announce`] for pickups, [`DRIVES_CHANNEL`] for drives).
    fn channel(self) -> &'static str {
        match self {
            Lane::Pickups => NOTIFY_CHANNEL,
            Lane::Drives => DRIVES_CHANNEL,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Lane::Pickups => "driver pickups",
            Lane::Drives => "driver drives",
        }
    }
}

/// The channel on which the pickups tell this process's drives that a delivery is on the way (in
/// memory only, like [`announce`]).
pub const DRIVES_CHANNEL: &str = "delivery_drives";

/// Wakes this process's drives: what a pickup round does after committing a delivery put on the
/// way; for a tool or a test that puts one there by other means.
pub fn announce_on_the_way(pool: &PgPool) {
    Notifications::shared(pool).announce(DRIVES_CHANNEL, "");
}

impl Drivers {
    /// Runs the two lanes' rounds until `stop`, each woken as the module docs say. A failed round
    /// is logged and tried again shortly.
    pub async fn run(self, stop: Stop) {
        let (pickups, drives) = stop.split();
        tokio::join!(
            self.lane(Lane::Pickups, pickups.wait()),
            self.lane(Lane::Drives, drives.wait())
        );
    }

    async fn lane(&self, lane: Lane, shutdown: impl Future<Output = ()>) {
        let pool = self.effects.pool.clone();
        pizza_servicekit::background::notified_rounds(
            lane.name(),
            (&pool, lane.channel(), Source::Process),
            self.safety_net,
            shutdown,
            || async { Ok::<_, StoreError>(self.round_of(lane).await?.next_due) },
        )
        .await;
    }

    /// One round of each lane, pickups first: every due delivery (a batch of each at most) one step
    /// further. Public so tests and tools can drive the loops by hand. Each lane's round is a
    /// transaction of its own: one that fails changes nothing (the pickups' round may have
    /// committed before the drives' failed).
    pub async fn round(&self) -> Result<Round, StoreError> {
        let pickups = self.round_of(Lane::Pickups).await?;
        let drives = self.round_of(Lane::Drives).await?;
        let next_due = match (pickups.next_due, drives.next_due) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Ok(Round {
            steps: pickups.steps + drives.steps,
            next_due,
        })
    }

    /// One round of `lane`, in one transaction: take its due deliveries (a batch at most) one step
    /// further and say when its next step is due. A failed round changes nothing and is tried
    /// again whole.
    pub async fn round_of(&self, lane: Lane) -> Result<Round, StoreError> {
        let mut tx = self.effects.begin().await?;
        let rows = store::lock_due(&mut *tx, lane.due(), STEP_BATCH).await?;
        let spans: Vec<Span> = rows
            .iter()
            .map(|row| {
                let name = match lane {
                    Lane::Pickups => "delivery.pickup",
                    Lane::Drives => "delivery.drive",
                };
                delivery_span(name, row)
            })
            .collect();
        // The kitchen's answers first, all at once; each call inside its delivery's span.
        let answers: Vec<Option<Pickup>> = match lane {
            Lane::Pickups => join_all(
                rows.iter()
                    .zip(&spans)
                    .map(|(row, span)| self.kitchen.pickup(row.order_id).instrument(span.clone())),
            )
            .await
            .into_iter()
            .map(Some)
            .collect(),
            Lane::Drives => vec![None; rows.len()],
        };
        // Each step decided inside its span (its logs, its status, the context its event carries),
        // then the round's changes and events written in one statement each.
        let mut changes = Vec::with_capacity(rows.len());
        let mut events = Vec::with_capacity(rows.len());
        let mut picked_up = false;
        for ((row, span), answer) in rows.iter().zip(&spans).zip(answers) {
            span.in_scope(|| {
                let (change, event) = match answer {
                    Some(answer) => self.pickup(row, answer),
                    None => self.drive(row),
                };
                picked_up |= matches!(change, store::Change::PickedUp { .. });
                changes.push((row.delivery_id, change));
                if let Some(event) = event {
                    events.push((event, current_carrier()));
                }
            });
        }
        drop(spans);
        store::apply(&mut *tx, &changes).await?;
        let published = !events.is_empty();
        self.effects.publish_all(&mut tx, events).await?;
        let next_due = if rows.len() as i64 == STEP_BATCH {
            Some(Duration::ZERO)
        } else {
            pizza_servicekit::background::until_due(store::next_due_in(&mut *tx, lane.due()).await?)
        };
        tx.commit().await?;
        if published {
            self.effects.announce_published();
        }
        if picked_up {
            announce_on_the_way(&self.effects.pool);
        }
        Ok(Round {
            steps: rows.len(),
            next_due,
        })
    }

    /// What the kitchen's answer to a pickup does, and the event that reports it.
    fn pickup(&self, row: &DeliveryRow, answer: Pickup) -> (store::Change, Option<DeliveryEvent>) {
        match answer {
            Pickup::PickedUp => {
                tracing::info!(delivery_id = %row.delivery_id, "order picked up");
                let change = store::Change::PickedUp {
                    leg_seconds: self.leg_time.as_secs_f64(),
                };
                let event = OrderOutForDelivery {
                    order_id: row.order_id,
                    delivery_id: row.delivery_id,
                };
                (change, Some(event.into()))
            }
            Pickup::NotYet(why) if (row.pickup_attempts as u32) + 1 < self.pickup_attempts => {
                tracing::info!(delivery_id = %row.delivery_id, attempt = row.pickup_attempts + 1, %why, "pickup not possible yet");
                let change = store::Change::RetryPickup {
                    retry_seconds: self.pickup_retry.as_secs_f64(),
                };
                (change, None)
            }
            Pickup::NotYet(why) => {
                tracing::warn!(delivery_id = %row.delivery_id, %why, "giving up on the pickup");
                fail(row, reasons::PICKUP_TIMEOUT)
            }
            Pickup::Unavailable(why) => {
                tracing::warn!(delivery_id = %row.delivery_id, %why, "the kitchen will not hand the order over");
                fail(row, reasons::TICKET_UNAVAILABLE)
            }
        }
    }

    /// The next leg of a drive, or its end, and the event that reports it.
    fn drive(&self, row: &DeliveryRow) -> (store::Change, Option<DeliveryEvent>) {
        if self.effects.faults.business_failure(DRIVER_FAULT) {
            tracing::warn!(delivery_id = %row.delivery_id, "driver failed (fault plan)");
            return fail(row, reasons::DRIVER_FAILURE);
        }
        let step = row.progress_step + 1;
        if step as u32 <= self.updates {
            let change = store::Change::Advance {
                step,
                leg_seconds: self.leg_time.as_secs_f64(),
            };
            let event = OrderOnItsWay {
                order_id: row.order_id,
                delivery_id: row.delivery_id,
                progress_percent: progress(step as u32, self.updates),
            };
            (change, Some(event.into()))
        } else {
            tracing::info!(delivery_id = %row.delivery_id, "order delivered");
            let event = OrderCompleted {
                order_id: row.order_id,
                delivery_id: row.delivery_id,
            };
            (store::Change::Delivered, Some(event.into()))
        }
    }
}

/// A delivery that ends `failed` for `reason`, marked on the current span, and its event.
fn fail(row: &DeliveryRow, reason: &'static str) -> (store::Change, Option<DeliveryEvent>) {
    effects::fail_current(reason);
    let event = DeliveryIssue {
        order_id: row.order_id,
        delivery_id: row.delivery_id,
        reason: reason.to_owned(),
    };
    (store::Change::Failed { reason }, Some(event.into()))
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
