//! The deliveries table. Every change is guarded by the status it expects, so two replicas never
//! both advance the same delivery.

use std::collections::BTreeMap;

use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("delivery database query failed: {0}")]
    Database(#[from] sqlx::Error),
    /// An event could not be written to the outbox (in the same transaction as the change it
    /// reports).
    #[error(transparent)]
    Outbox(#[from] pizza_messaging::OutboxError),
}

/// A delivery row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    /// The service's id for the trip.
    pub delivery_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// The kitchen ticket to pick up.
    pub ticket_id: Uuid,
    /// `requested`, `on_the_way`, `delivered` or `failed`.
    pub status: String,
    /// Position updates sent so far.
    pub progress_step: i32,
    /// Pickup attempts so far.
    pub pickup_attempts: i32,
    /// Why it failed.
    pub failure_reason: Option<String>,
    /// The context of the span that accepted the request.
    pub trace_carrier: Json<BTreeMap<String, String>>,
}

/// Records a requested delivery unless the order has one. True if it was new.
pub async fn insert(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    ticket_id: Uuid,
    carrier: &BTreeMap<String, String>,
) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "insert into delivery.deliveries (delivery_id, order_id, ticket_id, status, trace_carrier) \
         values ($1, $2, $3, 'requested', $4) on conflict (order_id) do nothing",
    )
    .bind(Uuid::now_v7())
    .bind(order_id)
    .bind(ticket_id)
    .bind(Json(carrier))
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// The delivery of an order.
pub async fn find(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Option<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(
        "select delivery_id, order_id, ticket_id, status, progress_step, pickup_attempts, failure_reason, \
         trace_carrier from delivery.deliveries where order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?)
}

/// Up to `limit` deliveries whose next step is due, the earliest first, locked; rows another
/// replica holds are skipped.
pub async fn lock_due(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(
        "select delivery_id, order_id, ticket_id, status, progress_step, pickup_attempts, failure_reason, \
         trace_carrier from delivery.deliveries \
         where status in ('requested', 'on_the_way') and next_at <= now() \
         order by next_at limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// How long until the next step of a delivery is due, by the database's clock at the time of the
/// call (`clock_timestamp()`, not the transaction's start): zero if one is due already, `None` if no
/// delivery is under way.
pub async fn next_due_in(db: impl PgExecutor<'_>) -> Result<Option<std::time::Duration>, StoreError> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(next_at) - clock_timestamp())::float8 from delivery.deliveries \
         where status in ('requested', 'on_the_way')",
    )
    .fetch_one(db)
    .await?;
    Ok(seconds.map(pizza_servicekit::background::seconds_from_now))
}

/// `requested` → `on_the_way`, first leg due after `leg_seconds`.
pub async fn mark_picked_up(
    db: impl PgExecutor<'_>,
    delivery_id: Uuid,
    leg_seconds: f64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update delivery.deliveries set status = 'on_the_way', picked_up_at = now(), updated_at = now(), \
         progress_step = 0, next_at = now() + make_interval(secs => $2) \
         where delivery_id = $1 and status = 'requested'",
    )
    .bind(delivery_id)
    .bind(leg_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// Another pickup attempt failed; try again after `retry_seconds`.
pub async fn retry_pickup(
    db: impl PgExecutor<'_>,
    delivery_id: Uuid,
    retry_seconds: f64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update delivery.deliveries set pickup_attempts = pickup_attempts + 1, updated_at = now(), \
         next_at = now() + make_interval(secs => $2) where delivery_id = $1 and status = 'requested'",
    )
    .bind(delivery_id)
    .bind(retry_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// One more leg driven: the step is `step`, the next leg due after `leg_seconds`.
pub async fn advance(
    db: impl PgExecutor<'_>,
    delivery_id: Uuid,
    step: i32,
    leg_seconds: f64,
) -> Result<(), StoreError> {
    sqlx::query(
        "update delivery.deliveries set progress_step = $2, updated_at = now(), \
         next_at = now() + make_interval(secs => $3) where delivery_id = $1 and status = 'on_the_way'",
    )
    .bind(delivery_id)
    .bind(step)
    .bind(leg_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// `on_the_way` → `delivered`.
pub async fn mark_delivered(db: impl PgExecutor<'_>, delivery_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "update delivery.deliveries set status = 'delivered', delivered_at = now(), updated_at = now() \
         where delivery_id = $1 and status = 'on_the_way'",
    )
    .bind(delivery_id)
    .execute(db)
    .await?;
    Ok(())
}

/// → `failed`, with a reason code.
pub async fn mark_failed(db: impl PgExecutor<'_>, delivery_id: Uuid, reason: &str) -> Result<(), StoreError> {
    sqlx::query(
        "update delivery.deliveries set status = 'failed', failure_reason = $2, updated_at = now() \
         where delivery_id = $1 and status in ('requested', 'on_the_way')",
    )
    .bind(delivery_id)
    .bind(reason)
    .execute(db)
    .await?;
    Ok(())
}
