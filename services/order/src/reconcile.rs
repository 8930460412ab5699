//! The safety net under "every accepted order ends in exactly one terminal state", which never ends an
//! order in a state the payment ledger contradicts.
//!
//! The workflow ends every order itself, compensation included. But a run can end without reaching
//! its last step for reasons outside the workflow's code paths: a panic in workflow code, a workflow
//! changed under a running run (non-determinism), corrupt history, a compensation step that used up
//! its attempts, a hand-cancelled or hand-edited run. Such an order would wait forever. Each round,
//! this finds orders that are not final although their run (and its payment child) has ended, and
//! settles them by the ledger:
//!
//! - no capture, or a capture and its refund: the money is right for a cancelled order, so it ends
//!   `cancelled` with reason `workflow-ended` and an `order-cancelled` event (which the kitchen acts
//!   on);
//! - a capture and no refund: neither end is honest. Cancelling would keep the customer's money;
//!   completing would claim a pizza nobody knows was delivered, and refunding here would pay back one
//!   that may be in the customer's hands. The order goes `on_hold` with reason `workflow-ended`, out of
//!   reach of every automatic change, and an operator settles it: it shows in `GET /orders?status=
//!   on_hold`, in the `pizza.orders.on_hold` counter and in an ERROR log line with the order id.
//!
//! An order whose payment child is still running is left for a later round: a capture may still land.

use std::sync::OnceLock;
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::Counter;
use pizza_contracts::events::OrderCancelled;
use pizza_messaging::{Envelope, Outbox};
use pizza_telemetry::attributes::{pizza, workflow};
use sqlx::PgPool;
use tracing::Instrument as _;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::fulfillment::SOURCE;
use crate::store::{self, Change, Status, StoreError};

/// The reason recorded on an order its workflow abandoned.
pub const REASON: &str = "workflow-ended";

/// How often the reconciler looks.
pub const EVERY: Duration = Duration::from_secs(5);

/// What one round did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Round {
    /// Orders ended `cancelled` (the ledger agrees).
    pub cancelled: Vec<Uuid>,
    /// Orders put `on_hold` for an operator (a capture and no refund).
    pub held: Vec<Uuid>,
}

/// An order whose run ended without ending it.
#[derive(Debug, sqlx::FromRow)]
struct Abandoned {
    order_id: Uuid,
    run_status: String,
}

/// One round: settles every abandoned order (see the module docs).
pub async fn round(pool: &PgPool, outbox: &Outbox, orders_events_topic: &str) -> Result<Round, StoreError> {
    let abandoned: Vec<Abandoned> = sqlx::query_as(
        "select o.order_id, r.status as run_status from orders.orders o join workflow.runs r on r.id = o.run_id \
         where o.status not in ('completed', 'cancelled', 'rejected', 'on_hold') \
           and r.status in ('completed', 'failed', 'cancelled') \
           and not exists (select 1 from workflow.runs c where c.parent_run_id = r.id \
                           and c.status not in ('completed', 'failed', 'cancelled')) \
         limit 100",
    )
    .fetch_all(pool)
    .await?;
    let mut round = Round::default();
    for order in abandoned {
        // A root span of its own: the `order-cancelled` it writes carries this context, so the event
        // and what the kitchen does with it are traced, and the reconciliation shows in Jaeger.
        let span = tracing::info_span!("order.reconcile", otel.kind = "internal");
        span.set_attribute(pizza::ORDER_ID, order.order_id.to_string());
        settle(pool, outbox, orders_events_topic, &order, &mut round)
            .instrument(span)
            .await?;
    }
    Ok(round)
}

async fn settle(
    pool: &PgPool,
    outbox: &Outbox,
    orders_events_topic: &str,
    order: &Abandoned,
    round: &mut Round,
) -> Result<(), StoreError> {
    let order_id = order.order_id;
    let mut tx = pool.begin().await?;
    let captured = store::has_payment(&mut *tx, order_id, "capture").await?;
    let refunded = store::has_payment(&mut *tx, order_id, "refund").await?;
    if captured && !refunded {
        let change = Change::to(Status::OnHold, "held-for-operator")
            .because(REASON)
            .once();
        let held = store::advance(&mut tx, order_id, change).await?;
        tx.commit().await?;
        if held.is_some_and(|a| !a.before.is_final() && a.after == Status::OnHold) {
            on_hold_counter().add(
                1,
                &[KeyValue::new(workflow::RUN_STATUS, order.run_status.clone())],
            );
            tracing::error!(
                %order_id,
                run_status = %order.run_status,
                "order's workflow ended with the payment captured and not refunded; on hold for an operator"
            );
            round.held.push(order_id);
        }
        return Ok(());
    }
    let change = Change::to(Status::Cancelled, "workflow-ended")
        .because(REASON)
        .once();
    let advanced = store::advance(&mut tx, order_id, change).await?;
    if advanced.is_some_and(|a| !a.before.is_final() && a.after == Status::Cancelled) {
        let event = Envelope::new(
            SOURCE,
            OrderCancelled {
                order_id,
                reason: REASON.to_owned(),
            },
        );
        outbox
            .enqueue_to(&mut tx, orders_events_topic, &event)
            .await
            .map_err(|e| StoreError::Database(sqlx::Error::Protocol(e.to_string())))?;
        tracing::error!(%order_id, run_status = %order.run_status, "order's workflow ended without ending the order; cancelled it");
        round.cancelled.push(order_id);
    }
    tx.commit().await?;
    // Wakes the relay for the `order-cancelled` (a no-op wake when nothing was written).
    outbox.announce(pool);
    Ok(())
}

/// `pizza.orders.on_hold`, made on first use so it binds to the meter provider the service installed.
fn on_hold_counter() -> &'static Counter<u64> {
    static COUNTER: OnceLock<Counter<u64>> = OnceLock::new();
    COUNTER.get_or_init(|| {
        opentelemetry::global::meter("pizza-order")
            .u64_counter(pizza_telemetry::metrics::ORDERS_ON_HOLD)
            .with_description(
                "Orders put on hold for an operator: workflow ended, payment captured, not refunded",
            )
            .with_unit("{order}")
            .build()
    })
}
