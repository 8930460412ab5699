//! The ovens: a background loop that starts queued tickets while ovens are free and finishes the
//! ones whose cook time has passed.
//!
//! All of its state is in the tickets table (`status`, `cook_until`), so a kitchen that restarts, or
//! a second replica, carries on exactly where the first left off. Starts are serialized by an
//! advisory lock (count the busy ovens, fill the free ones, in one step); finishes take one due
//! ticket at a time with `for update skip locked`, so replicas share them.
//!
//! # Trace continuation
//! The work on a ticket runs inside a span whose parent is the context stored with the ticket by
//! `POST /tickets`. The outbox rows written there carry that context, so the relay's
//! `send kitchen.events` span joins the order's trace, however much later the oven finishes.

use std::future::Future;
use std::time::Duration;

use pizza_contracts::events::{KitchenEvent, KitchenIssue, OrderInPreparation, OrderReady};
use pizza_servicekit::effects::{self, Effects};
use tracing::{Instrument as _, Span};

use crate::store::{self, StoreError, TicketRow};

/// The CloudEvents `source` of the kitchen's events.
pub const EVENT_SOURCE: &str = "/pizza/kitchen";
/// The business fault (`business_failure_rate.oven`) that breaks the oven of a finishing ticket.
pub const OVEN_FAULT: &str = "oven";
/// The `kitchen-issue` reason when the oven fails.
pub const OVEN_FAILURE: &str = "oven-failure";

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Tickets put in an oven.
    pub started: usize,
    /// Tickets taken out ready.
    pub finished: usize,
    /// Tickets whose oven failed.
    pub failed: usize,
}

/// The oven loop. See the module docs.
#[derive(Debug, Clone)]
pub struct Ovens {
    /// The kitchen's database, the live fault plan (`oven`, `db_latency_ms`) and where its events
    /// go ([`EVENT_SOURCE`], `kitchen.events`).
    pub effects: Effects,
    /// Tickets that can cook at once.
    pub capacity: u32,
    /// How long a ticket cooks (already scaled).
    pub cook_time: Duration,
    /// Pause between rounds.
    pub tick: Duration,
}

impl Ovens {
    /// Runs rounds until `shutdown` completes. A failed round is logged and retried on the next tick.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        pizza_servicekit::background::rounds("oven", self.tick, shutdown, || self.round()).await;
    }

    /// One round: finish every due ticket, then fill the free ovens. Public so tests and tools can
    /// drive the ovens by hand. A failed round is retried whole on the next tick.
    pub async fn round(&self) -> Result<Round, StoreError> {
        let mut round = Round::default();
        while let Some(ready) = self.finish_one().await? {
            if ready {
                round.finished += 1;
            } else {
                round.failed += 1;
            }
        }
        round.started = self.start_free().await?;
        Ok(round)
    }

    /// Takes one due ticket out of its oven: `Some(true)` ready, `Some(false)` the oven failed,
    /// `None` nothing is due.
    async fn finish_one(&self) -> Result<Option<bool>, StoreError> {
        let mut tx = self.effects.begin().await?;
        let Some(row) = store::lock_one_done(&mut *tx).await? else {
            tx.commit().await?;
            return Ok(None);
        };
        let span = ticket_span("cook.finish", &row);
        let ready = async {
            let ready = !self.effects.faults.business_failure(OVEN_FAULT);
            let event: KitchenEvent = if ready {
                store::mark_ready(&mut *tx, row.ticket_id).await?;
                tracing::info!(ticket_id = %row.ticket_id, "ticket ready");
                OrderReady {
                    order_id: row.order_id,
                    ticket_id: row.ticket_id,
                }
                .into()
            } else {
                store::mark_failed(&mut *tx, row.ticket_id, OVEN_FAILURE).await?;
                tracing::warn!(ticket_id = %row.ticket_id, "oven failed (fault plan)");
                effects::fail_current(OVEN_FAILURE);
                KitchenIssue {
                    order_id: row.order_id,
                    ticket_id: row.ticket_id,
                    reason: OVEN_FAILURE.to_owned(),
                }
                .into()
            };
            self.effects.publish(&mut tx, event).await?;
            Ok::<_, StoreError>(ready)
        }
        .instrument(span)
        .await?;
        tx.commit().await?;
        Ok(Some(ready))
    }

    /// Starts as many queued tickets as there are free ovens, oldest first.
    async fn start_free(&self) -> Result<usize, StoreError> {
        let mut tx = self.effects.begin().await?;
        store::lock_ovens(&mut *tx).await?;
        let busy = store::cooking(&mut *tx).await?;
        let free = i64::from(self.capacity) - busy;
        if free <= 0 {
            tx.commit().await?;
            return Ok(0);
        }
        let rows = store::lock_queued(&mut *tx, free).await?;
        for row in &rows {
            let span = ticket_span("cook.start", row);
            async {
                store::mark_cooking(&mut *tx, row.ticket_id, self.cook_time.as_secs_f64()).await?;
                tracing::info!(ticket_id = %row.ticket_id, "ticket in the oven");
                let event = KitchenEvent::from(OrderInPreparation {
                    order_id: row.order_id,
                    ticket_id: row.ticket_id,
                });
                self.effects.publish(&mut tx, event).await?;
                Ok::<_, StoreError>(())
            }
            .instrument(span)
            .await?;
        }
        tx.commit().await?;
        Ok(rows.len())
    }
}

/// An INTERNAL span for work on a ticket, continuing the trace of the request that created it.
fn ticket_span(name: &'static str, row: &TicketRow) -> Span {
    let span = tracing::info_span!(
        "kitchen.ticket",
        otel.name = name,
        otel.kind = "internal",
        otel.status_code = tracing::field::Empty,
    );
    effects::continue_stored(&span, &row.trace_carrier.0, row.order_id);
    span
}
