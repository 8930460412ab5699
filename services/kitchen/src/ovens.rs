//! The ovens: a background loop that starts queued tickets while ovens are free and finishes the
//! ones whose cook time has passed.
//!
//! All of its state is in the tickets table (`status`, `cook_until`), so a kitchen that restarts, or
//! a second replica, carries on exactly where the first left off. A round is one transaction: it
//! takes the oven lock (an advisory lock, so counting the busy ovens and filling the free ones is
//! one step across replicas), finishes the due tickets (a batch of [`FINISH_BATCH`] at most, locked
//! with `for update skip locked`), fills the ovens that are free now, and reads when the next
//! ticket will be done.
//!
//! # Waking up
//! The loop does not poll. It sleeps until the next ticket is done (the earliest `cook_until`), or
//! until the kitchen says on [`NOTIFY_CHANNEL`] that a ticket was inserted or cancelled, whichever
//! is first; with nothing cooking and nothing arriving it looks once per [`Ovens::safety_net`]. An
//! idle kitchen therefore costs one transaction per safety net, and a ticket goes into a free oven
//! as soon as its insert commits.
//!
//! Only the kitchen writes tickets (`POST /tickets`, the cancel, the consumer of cancelled orders),
//! so the writer announces its commit in memory ([`announce`]), not with a `NOTIFY`: the kitchen
//! holds no listening connection, and its tickets and outbox send nothing that every listening
//! connection of the shop's database would have to read in a transaction of its own (see
//! `pizza_notify::Source`; migration `0003_wake_in_process.sql` dropped the triggers). The round
//! announces its own published events to the relay the same way. The price: a ticket written by
//! another replica reaches this replica's ovens at their safety net, not at once (the writing
//! replica's own ovens take it at once).
//!
//! # Trace continuation
//! The work on a ticket runs inside a span whose parent is the context stored with the ticket by
//! `POST /tickets`. The outbox row of its event carries that span's context (captured inside it;
//! the round writes its events together after), so the relay's `send kitchen.events` span joins the
//! order's trace, however much later the oven finishes.

use std::future::Future;
use std::time::Duration;

use pizza_contracts::events::{KitchenEvent, KitchenIssue, OrderInPreparation, OrderReady};
use pizza_messaging::outbox::current_carrier;
use pizza_notify::{Notifications, Source};
use pizza_servicekit::effects::{self, Effects};
use sqlx::{PgPool, Postgres, Transaction};
use tracing::Span;

use crate::store::{self, StoreError, TicketRow};

/// The CloudEvents `source` of the kitchen's events.
pub const EVENT_SOURCE: &str = "/pizza/kitchen";
/// The business fault (`business_failure_rate.oven`) that breaks the oven of a finishing ticket.
pub const OVEN_FAULT: &str = "oven";
/// The `kitchen-issue` reason when the oven fails.
pub const OVEN_FAILURE: &str = "oven-failure";

/// The channel on which the kitchen tells its ovens they have something new to do ([`announce`]).
pub const NOTIFY_CHANNEL: &str = "kitchen_tickets";

/// Wakes this process's ovens: call it after committing a new ticket or a cancel.
pub fn announce(pool: &PgPool) {
    Notifications::shared(pool).announce(NOTIFY_CHANNEL, "");
}
/// The most tickets one round takes out of the ovens; more due ones go in the next round, at once.
pub const FINISH_BATCH: i64 = 64;

/// What one round did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Round {
    /// Tickets put in an oven.
    pub started: usize,
    /// Tickets taken out ready.
    pub finished: usize,
    /// Tickets whose oven failed.
    pub failed: usize,
    /// When the next ticket is done (zero if due tickets were left for the next round); `None`
    /// when nothing is cooking.
    pub next_due: Option<Duration>,
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
    /// The longest the loop sleeps without a notification or a ticket due (see "Waking up").
    pub safety_net: Duration,
}

impl Ovens {
    /// Runs rounds until `shutdown` completes, woken as the module docs say. A failed round is logged
    /// and tried again shortly.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let pool = self.effects.pool.clone();
        pizza_servicekit::background::notified_rounds(
            "oven",
            (&pool, NOTIFY_CHANNEL, Source::Process),
            self.safety_net,
            shutdown,
            || async { Ok::<_, StoreError>(self.round().await?.next_due) },
        )
        .await;
    }

    /// One round, in one transaction: finish the due tickets, fill the free ovens, and say when the
    /// next ticket is done. Public so tests and tools can drive the ovens by hand. A failed round
    /// changes nothing and is tried again whole.
    ///
    /// Each ticket's step is decided inside its span (its log, its status, the context its event
    /// carries); the round's changes then go in one statement per kind and its events in one
    /// ([`store::finish_all`], [`store::start_all`], [`Effects::publish_all`]), not two statements a
    /// ticket one after another: at 100 orders/s those were 400 round trips a second in this one
    /// loop, and a ticket waited 155 ms at the median between its insert and its oven (20 ms at
    /// 10 orders/s; `pizza-load bench`, "Where a completed order's end-to-end time went").
    pub async fn round(&self) -> Result<Round, StoreError> {
        let mut round = Round::default();
        let mut tx = self.effects.begin().await?;
        store::lock_ovens(&mut *tx).await?;
        let mut events = Vec::new();
        let done = store::lock_done(&mut *tx, FINISH_BATCH).await?;
        let mut ends = Vec::with_capacity(done.len());
        for row in &done {
            ticket_span("cook.finish", row).in_scope(|| {
                let (end, event) = self.finish(row);
                match end {
                    None => round.finished += 1,
                    Some(_) => round.failed += 1,
                }
                ends.push((row.ticket_id, end));
                events.push((event, current_carrier()));
            });
        }
        store::finish_all(&mut *tx, &ends).await?;
        let started = self.start_free(&mut tx).await?;
        round.started = started.len();
        for row in &started {
            ticket_span("cook.start", row).in_scope(|| {
                tracing::info!(ticket_id = %row.ticket_id, "ticket in the oven");
                let event = KitchenEvent::from(OrderInPreparation {
                    order_id: row.order_id,
                    ticket_id: row.ticket_id,
                });
                events.push((event, current_carrier()));
            });
        }
        let published = !events.is_empty();
        self.effects.publish_all(&mut tx, events).await?;
        round.next_due = if done.len() as i64 == FINISH_BATCH {
            Some(Duration::ZERO)
        } else {
            pizza_servicekit::background::until_due(store::next_done_in(&mut *tx).await?)
        };
        tx.commit().await?;
        if published {
            self.effects.announce_published();
        }
        Ok(round)
    }

    /// How a due ticket comes out of its oven (`None` ready, or the oven's failure, by the fault
    /// plan), and the event that reports it.
    fn finish(&self, row: &TicketRow) -> (Option<&'static str>, KitchenEvent) {
        if self.effects.faults.business_failure(OVEN_FAULT) {
            tracing::warn!(ticket_id = %row.ticket_id, "oven failed (fault plan)");
            effects::fail_current(OVEN_FAILURE);
            let event = KitchenIssue {
                order_id: row.order_id,
                ticket_id: row.ticket_id,
                reason: OVEN_FAILURE.to_owned(),
            };
            return (Some(OVEN_FAILURE), event.into());
        }
        tracing::info!(ticket_id = %row.ticket_id, "ticket ready");
        let event = OrderReady {
            order_id: row.order_id,
            ticket_id: row.ticket_id,
        };
        (None, event.into())
    }

    /// Starts as many queued tickets as there are free ovens, oldest first, in the round's
    /// transaction (which holds the oven lock), in one statement; returns them.
    async fn start_free(
        &self,
        tx: &mut Transaction<'static, Postgres>,
    ) -> Result<Vec<TicketRow>, StoreError> {
        let busy = store::cooking(&mut **tx).await?;
        let free = i64::from(self.capacity) - busy;
        if free <= 0 {
            return Ok(Vec::new());
        }
        let rows = store::lock_queued(&mut **tx, free).await?;
        let ids: Vec<_> = rows.iter().map(|r| r.ticket_id).collect();
        store::start_all(&mut **tx, &ids, self.cook_time.as_secs_f64()).await?;
        Ok(rows)
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
