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

/// The deliveries a round takes: those waiting for their pickup, or those on the way.
///
/// Each spells its status in its statements rather than binding it: the index that finds due
/// deliveries is partial (`deliveries_due ... where status in ('requested', 'on_the_way')`), and a
/// cached generic plan for `status = $1` cannot prove that predicate, so it could not use the index
/// and would read the whole table, every delivered row included, at every round.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// `requested`.
    Pickups,
    /// `on_the_way`.
    Drives,
}

/// The statements of [`lock_due`] and [`next_due_in`] for one status.
macro_rules! due_statements {
    ($status:literal) => {
        (
            concat!(
                "select delivery_id, order_id, ticket_id, status, progress_step, pickup_attempts, \
                 failure_reason, trace_carrier from delivery.deliveries \
                 where status = '",
                $status,
                "' and next_at <= now() order by next_at limit $1 for update skip locked"
            ),
            concat!(
                "select extract(epoch from min(next_at) - clock_timestamp())::float8 \
                 from delivery.deliveries where status = '",
                $status,
                "'"
            ),
        )
    };
}

impl Due {
    fn statements(self) -> (&'static str, &'static str) {
        match self {
            Due::Pickups => due_statements!("requested"),
            Due::Drives => due_statements!("on_the_way"),
        }
    }
}

/// Up to `limit` deliveries of `due` whose next step is due, the earliest first, locked; rows
/// another replica holds are skipped.
pub async fn lock_due(db: impl PgExecutor<'_>, due: Due, limit: i64) -> Result<Vec<DeliveryRow>, StoreError> {
    Ok(sqlx::query_as(due.statements().0)
        .bind(limit)
        .fetch_all(db)
        .await?)
}

/// How long until the next step of a delivery of `due` is due, by the database's clock at the time
/// of the call (`clock_timestamp()`, not the transaction's start): zero if one is due already,
/// `None` if there is no such delivery.
pub async fn next_due_in(
    db: impl PgExecutor<'_>,
    due: Due,
) -> Result<Option<std::time::Duration>, StoreError> {
    let seconds: Option<f64> = sqlx::query_scalar(due.statements().1).fetch_one(db).await?;
    Ok(seconds.map(pizza_servicekit::background::seconds_from_now))
}

/// What one step does to its delivery; a round writes all of its steps' changes in one statement
/// ([`apply`]).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Change {
    /// `requested` → `on_the_way`, the first leg due after `leg_seconds`.
    PickedUp {
        /// Drive time of a leg.
        leg_seconds: f64,
    },
    /// Another pickup attempt came to nothing; try again after `retry_seconds`.
    RetryPickup {
        /// Wait before the next attempt.
        retry_seconds: f64,
    },
    /// One more leg driven: the step is `step`, the next leg due after `leg_seconds`.
    Advance {
        /// Position updates sent, this one included.
        step: i32,
        /// Drive time of a leg.
        leg_seconds: f64,
    },
    /// `on_the_way` → `delivered`.
    Delivered,
    /// → `failed`, with a reason code.
    Failed {
        /// A short code (`driver-failure`), never free text.
        reason: &'static str,
    },
}

impl Change {
    /// The change's name in [`apply`]'s statement, and its step, seconds and reason columns.
    fn columns(self) -> (&'static str, i32, f64, Option<&'static str>) {
        match self {
            Change::PickedUp { leg_seconds } => ("picked-up", 0, leg_seconds, None),
            Change::RetryPickup { retry_seconds } => ("retry", 0, retry_seconds, None),
            Change::Advance { step, leg_seconds } => ("advance", step, leg_seconds, None),
            Change::Delivered => ("delivered", 0, 0.0, None),
            Change::Failed { reason } => ("failed", 0, 0.0, Some(reason)),
        }
    }
}

/// Writes a round's changes, one per delivery, in one statement. Each is guarded by the status it
/// expects (a pickup's changes `requested`, a drive's `on_the_way`, a failure either), as every
/// change to a delivery is; returns how many deliveries changed.
///
/// One statement, not one per step: a round of 32 steps was 32 updates and 32 outbox inserts, one
/// round trip each, one after another, and at 100 orders/s (600 steps a second) the drivers' loop
/// spent its time waiting on them, each leg of a drive due 0.3 s after the last arriving 0.57 s
/// after it (`pizza-load bench`, "Where a completed order's end-to-end time went").
pub async fn apply(db: impl PgExecutor<'_>, changes: &[(Uuid, Change)]) -> Result<u64, StoreError> {
    if changes.is_empty() {
        return Ok(0);
    }
    let n = changes.len();
    let (mut ids, mut kinds, mut steps, mut seconds, mut reasons) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    for (id, change) in changes {
        let (kind, step, secs, reason) = change.columns();
        ids.push(*id);
        kinds.push(kind);
        steps.push(step);
        seconds.push(secs);
        reasons.push(reason);
    }
    let done = sqlx::query(
        "update delivery.deliveries d set \
             status = case c.kind when 'picked-up' then 'on_the_way' when 'delivered' then 'delivered' \
                 when 'failed' then 'failed' else d.status end, \
             progress_step = case c.kind when 'picked-up' then 0 when 'advance' then c.step \
                 else d.progress_step end, \
             pickup_attempts = d.pickup_attempts + case c.kind when 'retry' then 1 else 0 end, \
             next_at = case when c.kind in ('picked-up', 'retry', 'advance') \
                 then now() + make_interval(secs => c.secs) else d.next_at end, \
             picked_up_at = case c.kind when 'picked-up' then now() else d.picked_up_at end, \
             delivered_at = case c.kind when 'delivered' then now() else d.delivered_at end, \
             failure_reason = case c.kind when 'failed' then c.reason else d.failure_reason end, \
             updated_at = now() \
         from unnest($1::uuid[], $2::text[], $3::int4[], $4::float8[], $5::text[]) as c(id, kind, step, secs, reason) \
         where d.delivery_id = c.id and case c.kind \
             when 'picked-up' then d.status = 'requested' \
             when 'retry' then d.status = 'requested' \
             when 'failed' then d.status in ('requested', 'on_the_way') \
             else d.status = 'on_the_way' end",
    )
    .bind(ids)
    .bind(kinds)
    .bind(steps)
    .bind(seconds)
    .bind(reasons)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
