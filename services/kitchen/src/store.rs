//! The tickets table: every state change of a ticket is one statement here, guarded by the status
//! it expects, so two replicas (or a request racing the oven loop) can never both win.

use std::collections::BTreeMap;

use pizza_contracts::events::OrderItem;
use pizza_contracts::kitchen::{Ticket, TicketStatus};
use sqlx::PgExecutor;
use sqlx::types::Json;
use uuid::Uuid;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("kitchen database query failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A row holds a status this build does not know (a newer replica wrote it).
    #[error("ticket {0} has an unknown status {1:?}")]
    UnknownStatus(Uuid, String),
    /// An event could not be written to the outbox (in the same transaction as the change it
    /// reports).
    #[error(transparent)]
    Outbox(#[from] pizza_messaging::OutboxError),
}

/// A ticket row.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct TicketRow {
    /// The kitchen's id.
    pub ticket_id: Uuid,
    /// The order.
    pub order_id: Uuid,
    /// What to make.
    pub items: Json<Vec<OrderItem>>,
    /// The status, as stored.
    pub status: String,
    /// The context of the request that created it.
    pub trace_carrier: Json<BTreeMap<String, String>>,
}

impl TicketRow {
    /// The status, parsed.
    pub fn status(&self) -> Result<TicketStatus, StoreError> {
        TicketStatus::parse(&self.status)
            .ok_or_else(|| StoreError::UnknownStatus(self.ticket_id, self.status.clone()))
    }

    /// The API view.
    pub fn to_ticket(&self) -> Result<Ticket, StoreError> {
        Ok(Ticket {
            ticket_id: self.ticket_id,
            order_id: self.order_id,
            status: self.status()?,
            items: self.items.0.clone(),
        })
    }
}

/// Inserts a queued ticket unless the order has one. Returns the new row, or `None` if a ticket for
/// the order existed already.
pub async fn insert(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    items: &[OrderItem],
    carrier: &BTreeMap<String, String>,
) -> Result<Option<TicketRow>, StoreError> {
    Ok(sqlx::query_as(
        "insert into kitchen.tickets (ticket_id, order_id, items, status, trace_carrier) \
         values ($1, $2, $3, 'queued', $4) on conflict (order_id) do nothing \
         returning ticket_id, order_id, items, status, trace_carrier",
    )
    .bind(Uuid::now_v7())
    .bind(order_id)
    .bind(Json(items))
    .bind(Json(carrier))
    .fetch_optional(db)
    .await?)
}

/// The ticket of an order.
pub async fn find(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Option<TicketRow>, StoreError> {
    Ok(sqlx::query_as(
        "select ticket_id, order_id, items, status, trace_carrier from kitchen.tickets where order_id = $1",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?)
}

/// The ticket of an order, locked for an update in the caller's transaction.
pub async fn lock(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Option<TicketRow>, StoreError> {
    Ok(sqlx::query_as(
        "select ticket_id, order_id, items, status, trace_carrier from kitchen.tickets \
         where order_id = $1 for update",
    )
    .bind(order_id)
    .fetch_optional(db)
    .await?)
}

/// `ready` → `picked_up`. True if this call changed it.
pub async fn mark_picked_up(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "update kitchen.tickets set status = 'picked_up', picked_up_at = now(), updated_at = now() \
         where order_id = $1 and status = 'ready'",
    )
    .bind(order_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Anything but `picked_up` → `cancelled`. True if this call changed it.
pub async fn mark_cancelled(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<bool, StoreError> {
    let done = sqlx::query(
        "update kitchen.tickets set status = 'cancelled', cancelled_at = now(), updated_at = now(), \
         cook_until = null where order_id = $1 and status in ('queued', 'cooking', 'ready', 'failed')",
    )
    .bind(order_id)
    .execute(db)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Serializes oven starts across replicas for the rest of the transaction, so counting the busy
/// ovens and filling the free ones is one step.
pub async fn lock_ovens(db: impl PgExecutor<'_>) -> Result<(), StoreError> {
    sqlx::query("select pg_advisory_xact_lock(hashtext('kitchen.ovens'))")
        .execute(db)
        .await?;
    Ok(())
}

/// Tickets in the ovens now.
pub async fn cooking(db: impl PgExecutor<'_>) -> Result<i64, StoreError> {
    Ok(
        sqlx::query_scalar("select count(*) from kitchen.tickets where status = 'cooking'")
            .fetch_one(db)
            .await?,
    )
}

/// Up to `limit` queued tickets, oldest first, locked; rows another replica holds are skipped.
pub async fn lock_queued(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<TicketRow>, StoreError> {
    Ok(sqlx::query_as(
        "select ticket_id, order_id, items, status, trace_carrier from kitchen.tickets \
         where status = 'queued' order by created_at, ticket_id limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// `queued` → `cooking` for `tickets`, each done after `cook_seconds`, in one statement.
pub async fn start_all(
    db: impl PgExecutor<'_>,
    tickets: &[Uuid],
    cook_seconds: f64,
) -> Result<(), StoreError> {
    if tickets.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "update kitchen.tickets set status = 'cooking', started_at = now(), updated_at = now(), \
         cook_until = now() + make_interval(secs => $2) where ticket_id = any($1) and status = 'queued'",
    )
    .bind(tickets)
    .bind(cook_seconds)
    .execute(db)
    .await?;
    Ok(())
}

/// Up to `limit` cooking tickets whose time is up, the earliest first, locked; rows another replica
/// holds are skipped.
pub async fn lock_done(db: impl PgExecutor<'_>, limit: i64) -> Result<Vec<TicketRow>, StoreError> {
    Ok(sqlx::query_as(
        "select ticket_id, order_id, items, status, trace_carrier from kitchen.tickets \
         where status = 'cooking' and cook_until <= now() order by cook_until limit $1 for update skip locked",
    )
    .bind(limit)
    .fetch_all(db)
    .await?)
}

/// How long until the next cooking ticket is done, by the database's clock at the time of the call
/// (`clock_timestamp()`, not the transaction's start): zero if one is due already, `None` if no
/// ticket is cooking.
pub async fn next_done_in(db: impl PgExecutor<'_>) -> Result<Option<std::time::Duration>, StoreError> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from min(cook_until) - clock_timestamp())::float8 from kitchen.tickets \
         where status = 'cooking'",
    )
    .fetch_one(db)
    .await?;
    Ok(seconds.map(pizza_servicekit::background::seconds_from_now))
}

/// Takes `tickets` out of their ovens in one statement: `cooking` → `ready` for those whose failure
/// is `None`, `cooking` → `failed` with the reason code for the others.
pub async fn finish_all(
    db: impl PgExecutor<'_>,
    tickets: &[(Uuid, Option<&'static str>)],
) -> Result<(), StoreError> {
    if tickets.is_empty() {
        return Ok(());
    }
    let (ids, failures): (Vec<Uuid>, Vec<Option<&str>>) = tickets.iter().copied().unzip();
    sqlx::query(
        "update kitchen.tickets t set \
             status = case when d.failure is null then 'ready' else 'failed' end, \
             ready_at = case when d.failure is null then now() else t.ready_at end, \
             failure_reason = coalesce(d.failure, t.failure_reason), updated_at = now() \
         from unnest($1::uuid[], $2::text[]) as d(id, failure) \
         where t.ticket_id = d.id and t.status = 'cooking'",
    )
    .bind(ids)
    .bind(failures)
    .execute(db)
    .await?;
    Ok(())
}
