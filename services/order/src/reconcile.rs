//! The safety net under "every accepted order ends in exactly one terminal state".
//!
//! The workflow ends every order itself, compensation included. But a run can end without reaching
//! its last step for reasons outside the workflow's code paths: a panic in workflow code, a workflow
//! changed under a running run (non-determinism), a hand-cancelled or hand-edited run. Such an order
//! would wait forever. Each round, this finds orders that are not terminal although their run has
//! ended, and ends them `cancelled` with reason `workflow-ended` and an `order-cancelled` event (which
//! the kitchen acts on). It runs no compensation of its own (the refund needs the run's history):
//! it is logged as an error for an operator, and counted in the logs by order id.

use std::time::Duration;

use pizza_contracts::events::OrderCancelled;
use pizza_messaging::{Envelope, Outbox};
use pizza_telemetry::attributes::pizza;
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

/// One round: ends every abandoned order; returns their ids.
pub async fn round(
    pool: &PgPool,
    outbox: &Outbox,
    orders_events_topic: &str,
) -> Result<Vec<Uuid>, StoreError> {
    let abandoned: Vec<Uuid> = sqlx::query_scalar(
        "select o.order_id from orders.orders o join workflow.runs r on r.id = o.run_id \
         where o.status not in ('completed', 'cancelled', 'rejected') \
           and r.status in ('completed', 'failed', 'cancelled') \
         limit 100",
    )
    .fetch_all(pool)
    .await?;
    let mut ended = Vec::new();
    for order_id in abandoned {
        // A root span of its own: the `order-cancelled` it writes carries this context, so the event
        // and what the kitchen does with it are traced, and the reconciliation shows in Jaeger.
        let span = tracing::info_span!("order.reconcile", otel.kind = "internal");
        span.set_attribute(pizza::ORDER_ID, order_id.to_string());
        end_abandoned(pool, outbox, orders_events_topic, order_id, &mut ended)
            .instrument(span)
            .await?;
    }
    Ok(ended)
}

async fn end_abandoned(
    pool: &PgPool,
    outbox: &Outbox,
    orders_events_topic: &str,
    order_id: Uuid,
    ended: &mut Vec<Uuid>,
) -> Result<(), StoreError> {
    {
        let mut tx = pool.begin().await?;
        let change = Change::to(Status::Cancelled, "workflow-ended")
            .because(REASON)
            .once();
        let advanced = store::advance(&mut tx, order_id, change).await?;
        if advanced.is_some_and(|a| !a.before.is_terminal() && a.after == Status::Cancelled) {
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
            tracing::error!(%order_id, "order's workflow ended without ending the order; cancelled it");
            ended.push(order_id);
        }
        tx.commit().await?;
    }
    Ok(())
}
