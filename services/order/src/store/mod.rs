//! The order tables. Every change of an order's status goes through [`advance`], which appends to the
//! timeline and moves the status forward only: events from two topics can arrive in either order
//! (`order-on-its-way` before `order-ready` when the kitchen's relay is slow), and a terminal status
//! is never left, so an order ends in exactly one.
//!
//! # Layout
//! - this module: the order's row, its timeline, the payment ledger; the status rules.
//! - [`placing`]: the one transaction that accepts an order (row, workflow run, `order-placed`).

pub mod placing;

use std::collections::HashMap;
use std::fmt;

use pizza_contracts::events::OrderItem;
use serde::{Deserialize, Serialize};
use sqlx::types::Json;
use sqlx::{PgConnection, PgExecutor};
use time::OffsetDateTime;
use uuid::Uuid;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A query failed.
    #[error("order database query failed: {0}")]
    Database(#[from] sqlx::Error),
    /// A row holds a status this build does not know (a newer replica wrote it).
    #[error("order {0} has an unknown status {1:?}")]
    UnknownStatus(Uuid, String),
}

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[derive(strum::Display, strum::EnumString, strum::IntoStaticStr)]
#[strum(serialize_all = "snake_case")]
pub enum Status {
    /// Accepted by `POST /orders`; the workflow has started.
    Accepted,
    /// Payment authorized and captured.
    Paid,
    /// The kitchen is cooking it.
    InPreparation,
    /// Out of the oven, waiting for a driver.
    Ready,
    /// A driver picked it up.
    OutForDelivery,
    /// The driver reports progress.
    OnItsWay,
    /// Handed over.
    Delivered,
    /// Delivered and the feedback request sent (terminal).
    Completed,
    /// Stopped and compensated: a timeout, a failure, or the customer asked (terminal).
    Cancelled,
    /// The order cannot be made as it stands (terminal).
    Rejected,
    /// Its workflow ended without ending it while the ledger holds a capture and no refund: nothing
    /// automatic moves it any more, an operator settles it (see [`crate::reconcile`]). Not terminal:
    /// the order is not done, and whoever waits for it should see that.
    OnHold,
}

impl Status {
    /// Every status, in the order an order moves through them.
    pub const ALL: [Status; 11] = [
        Status::Accepted,
        Status::Paid,
        Status::InPreparation,
        Status::Ready,
        Status::OutForDelivery,
        Status::OnItsWay,
        Status::Delivered,
        Status::Completed,
        Status::Cancelled,
        Status::Rejected,
        Status::OnHold,
    ];

    /// The spelling on the wire and in the database.
    pub fn as_str(self) -> &'static str {
        self.into()
    }

    /// The status spelled `s`.
    pub fn parse(s: &str) -> Option<Self> {
        s.parse().ok()
    }

    /// Whether the order ended.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Completed | Status::Cancelled | Status::Rejected)
    }

    /// Whether no automatic change moves the order any more: a terminal status, or on hold (only an
    /// operator moves it).
    pub fn is_final(self) -> bool {
        self.is_terminal() || self == Status::OnHold
    }

    /// Progress along the happy path; terminal statuses and on hold rank above everything.
    fn rank(self) -> u8 {
        match self {
            Status::Accepted => 0,
            Status::Paid => 1,
            Status::InPreparation => 2,
            Status::Ready => 3,
            Status::OutForDelivery => 4,
            Status::OnItsWay => 5,
            Status::Delivered => 6,
            Status::Completed | Status::Cancelled | Status::Rejected | Status::OnHold => 7,
        }
    }

    /// Whether the order got at least as far as `other` on the happy path (terminal statuses count
    /// as past everything).
    pub fn reached(self, other: Status) -> bool {
        self.rank() >= other.rank()
    }

    /// The status after `self` when `next` is reported: forward only, and never out of a terminal
    /// status or on hold.
    pub fn advance(self, next: Status) -> Status {
        if self.is_final() || next.rank() < self.rank() {
            self
        } else {
            next
        }
    }
}

/// Who ordered and where it goes. Customer data: `Debug` is redacted so it cannot reach a log line by
/// accident, and nothing puts it in a span.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Customer {
    /// Name.
    pub name: String,
    /// Phone number.
    pub phone: String,
    /// Address.
    pub address: Address,
}

/// A delivery address.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Address {
    /// Street and number.
    pub street: String,
    /// Postal code.
    pub postal_code: String,
    /// City.
    pub city: String,
}

impl fmt::Debug for Customer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Customer { <redacted> }")
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Address { <redacted> }")
    }
}

/// A new order.
#[derive(Debug, Clone)]
pub struct NewOrder<'a> {
    /// Its id.
    pub order_id: Uuid,
    /// What was ordered.
    pub items: &'a [OrderItem],
    /// The price.
    pub total_cents: u64,
    /// Who and where.
    pub customer: &'a Customer,
    /// The trace of the request.
    pub trace_id: &'a str,
    /// The client's idempotency key.
    pub idempotency_key: Option<&'a str>,
}

/// An order row (without the customer, which only the delivery request reads).
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct OrderRow {
    /// The order.
    pub order_id: Uuid,
    /// As stored.
    pub status: String,
    /// Why it was cancelled or rejected.
    pub reason: Option<String>,
    /// What was ordered.
    pub items: Json<Vec<OrderItem>>,
    /// The price.
    pub total_cents: i64,
    /// The workflow run.
    pub run_id: Option<Uuid>,
    /// The trace of `POST /orders`.
    pub trace_id: String,
    /// Created.
    pub created_at: OffsetDateTime,
    /// Last changed.
    pub updated_at: OffsetDateTime,
}

impl OrderRow {
    /// The status, parsed.
    pub fn status(&self) -> Result<Status, StoreError> {
        Status::parse(&self.status)
            .ok_or_else(|| StoreError::UnknownStatus(self.order_id, self.status.clone()))
    }
}

/// One timeline entry.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow, Serialize)]
pub struct TimelineEntry {
    /// 1, 2, 3… per order: the SSE event id.
    pub seq: i32,
    /// When.
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    /// The order's status after it.
    pub status: String,
    /// What caused it.
    pub event: String,
    /// The driver's progress, for `on_its_way`.
    pub progress_percent: Option<i16>,
}

const ORDER_COLUMNS: &str =
    "order_id, status, reason, items, total_cents, run_id, trace_id, created_at, updated_at";

/// An order that holds the `Idempotency-Key` a new order came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyHolder {
    /// The order.
    pub order_id: Uuid,
    /// The digest of its request (none for orders placed before digests were kept).
    pub request_digest: Option<Vec<u8>>,
}

/// Inserts an accepted order with its first timeline entry, the digest of its request and the hash of
/// its cancel token, in one statement, and returns the row as stored; unless the idempotency key was
/// used before: then nothing is written and the order holding the key is returned as `Err`.
pub async fn insert(
    conn: &mut PgConnection,
    order: NewOrder<'_>,
    request_digest: &[u8],
    cancel_token_hash: &[u8],
) -> Result<Result<OrderRow, KeyHolder>, StoreError> {
    let inserted: Option<OrderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "with inserted as ( \
             insert into orders.orders (order_id, status, items, total_cents, customer, trace_id, \
                 idempotency_key, request_digest, cancel_token_hash) \
             values ($1, 'accepted', $2, $3, $4, $5, $6, $7, $8) on conflict (idempotency_key) do nothing \
             returning {ORDER_COLUMNS} \
         ), entry as ( \
             insert into orders.timeline (order_id, seq, status, event) \
             select order_id, 1, 'accepted', 'order-accepted' from inserted \
         ) \
         select {ORDER_COLUMNS} from inserted"
    )))
    .bind(order.order_id)
    .bind(Json(order.items))
    .bind(order.total_cents as i64)
    .bind(Json(order.customer))
    .bind(order.trace_id)
    .bind(order.idempotency_key)
    .bind(request_digest)
    .bind(cancel_token_hash)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(inserted) = inserted else {
        let (order_id, request_digest) =
            sqlx::query_as("select order_id, request_digest from orders.orders where idempotency_key = $1")
                .bind(order.idempotency_key)
                .fetch_one(&mut *conn)
                .await?;
        return Ok(Err(KeyHolder {
            order_id,
            request_digest,
        }));
    };
    Ok(Ok(inserted))
}

/// The timeline event of `request-delivery`: once it is there, a driver may have the pizza.
pub const DELIVERY_REQUESTED: &str = "delivery-requested";

/// An order as a cancel sees it, its row locked.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct CancelLock {
    /// As stored.
    pub status: String,
    /// The workflow run.
    pub run_id: Option<Uuid>,
    /// Whether the presented token's hash is the order's (never for an order without one).
    pub token_matches: bool,
    /// Whether `request-delivery` has asked for a driver.
    pub delivery_requested: bool,
}

/// Locks the order's row for a cancel presenting a token with hash `token_hash`; `None` if there is
/// no such order.
pub async fn lock_for_cancel(
    conn: &mut PgConnection,
    order_id: Uuid,
    token_hash: &[u8],
) -> Result<Option<CancelLock>, StoreError> {
    Ok(sqlx::query_as(
        "select status, run_id, coalesce(cancel_token_hash = $2, false) as token_matches, \
         exists (select 1 from orders.timeline t where t.order_id = o.order_id and t.event = $3) \
           as delivery_requested \
         from orders.orders o where order_id = $1 for update",
    )
    .bind(order_id)
    .bind(token_hash)
    .bind(DELIVERY_REQUESTED)
    .fetch_optional(conn)
    .await?)
}

/// Notes a customer's cancel on the order (the first one counts).
pub async fn mark_cancel_requested(conn: &mut PgConnection, order_id: Uuid) -> Result<(), StoreError> {
    sqlx::query(
        "update orders.orders set cancel_requested_at = coalesce(cancel_requested_at, now()) \
         where order_id = $1",
    )
    .bind(order_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Locks the order's row for `request-delivery` and tells whether a customer's cancel is on file;
/// `None` if there is no such order.
pub async fn lock_for_delivery(conn: &mut PgConnection, order_id: Uuid) -> Result<Option<bool>, StoreError> {
    Ok(sqlx::query_scalar(
        "select cancel_requested_at is not null from orders.orders where order_id = $1 for update",
    )
    .bind(order_id)
    .fetch_optional(conn)
    .await?)
}

/// Records the workflow run of an order.
pub async fn set_run(db: impl PgExecutor<'_>, order_id: Uuid, run_id: Uuid) -> Result<(), StoreError> {
    sqlx::query("update orders.orders set run_id = $2 where order_id = $1")
        .bind(order_id)
        .bind(run_id)
        .execute(db)
        .await?;
    Ok(())
}

/// An order.
pub async fn find(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Option<OrderRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ORDER_COLUMNS} from orders.orders where order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(db)
    .await?)
}

/// An order and its whole timeline, in one statement: what `GET /orders/{id}` shows, read in one
/// snapshot (the status and the timeline always agree) and one round trip. Two statements outside a
/// transaction were two commits for every look at an order, and a client following an order looks
/// often.
pub async fn find_with_timeline(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
) -> Result<Option<(OrderRow, Vec<TimelineEntry>)>, StoreError> {
    #[derive(sqlx::FromRow)]
    struct Found {
        #[sqlx(flatten)]
        order: OrderRow,
        seqs: Vec<i32>,
        ats: Vec<OffsetDateTime>,
        statuses: Vec<String>,
        events: Vec<String>,
        progress: Vec<Option<i16>>,
    }
    let found: Option<Found> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ORDER_COLUMNS}, coalesce(t.seqs, '{{}}') as seqs, coalesce(t.ats, '{{}}') as ats, \
             coalesce(t.statuses, '{{}}') as statuses, coalesce(t.events, '{{}}') as events, \
             coalesce(t.progress, '{{}}') as progress \
         from orders.orders o left join lateral ( \
             select array_agg(seq order by seq) as seqs, array_agg(at order by seq) as ats, \
                 array_agg(status order by seq) as statuses, array_agg(event order by seq) as events, \
                 array_agg(progress_percent order by seq) as progress \
             from orders.timeline where order_id = o.order_id) t on true \
         where o.order_id = $1"
    )))
    .bind(order_id)
    .fetch_optional(db)
    .await?;
    Ok(found.map(|f| {
        let timeline = f
            .seqs
            .into_iter()
            .zip(f.ats)
            .zip(f.statuses)
            .zip(f.events)
            .zip(f.progress)
            .map(|((((seq, at), status), event), progress_percent)| TimelineEntry {
                seq,
                at,
                status,
                event,
                progress_percent,
            })
            .collect();
        (f.order, timeline)
    }))
}

/// The customer of an order.
pub async fn customer(db: impl PgExecutor<'_>, order_id: Uuid) -> Result<Option<Customer>, StoreError> {
    let row: Option<Json<Customer>> =
        sqlx::query_scalar("select customer from orders.orders where order_id = $1")
            .bind(order_id)
            .fetch_optional(db)
            .await?;
    Ok(row.map(|j| j.0))
}

/// The most recent orders, optionally of one status.
pub async fn list(
    db: impl PgExecutor<'_>,
    status: Option<Status>,
    limit: u32,
) -> Result<Vec<OrderRow>, StoreError> {
    Ok(sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "select {ORDER_COLUMNS} from orders.orders where ($1::text is null or status = $1) \
         order by created_at desc limit $2"
    )))
    .bind(status.map(Status::as_str))
    .bind(i64::from(limit))
    .fetch_all(db)
    .await?)
}

/// Timeline entries of an order after `after_seq`.
pub async fn timeline(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    after_seq: i32,
) -> Result<Vec<TimelineEntry>, StoreError> {
    Ok(sqlx::query_as(
        "select seq, at, status, event, progress_percent from orders.timeline \
         where order_id = $1 and seq > $2 order by seq",
    )
    .bind(order_id)
    .bind(after_seq)
    .fetch_all(db)
    .await?)
}

/// What [`advance`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advanced {
    /// The status before.
    pub before: Status,
    /// The status after (the same when `next` was behind, or the order had ended).
    pub after: Status,
    /// The order's workflow run, read with the lock (so a signal needs no second read).
    pub run_id: Option<Uuid>,
}

/// One change to an order: a timeline entry and the status it moves toward.
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    /// The status the change reports (see [`Status::advance`]; a status behind the current one
    /// leaves it as it is and only adds the entry).
    pub next: Status,
    /// What caused it.
    pub event: &'a str,
    /// The driver's progress.
    pub progress_percent: Option<u8>,
    /// Why, when `next` is cancelled or rejected.
    pub reason: Option<&'a str>,
    /// Skip the change if the timeline holds `event` already: for workflow steps, which may run
    /// twice (a crash after the commit, before the step's result was recorded).
    pub once: bool,
}

impl<'a> Change<'a> {
    /// A change toward `next` because of `event`.
    pub fn to(next: Status, event: &'a str) -> Self {
        Self {
            next,
            event,
            progress_percent: None,
            reason: None,
            once: false,
        }
    }

    /// With a reason.
    pub fn because(mut self, reason: &'a str) -> Self {
        self.reason = Some(reason);
        self
    }

    /// Applied at most once per order.
    pub fn once(mut self) -> Self {
        self.once = true;
        self
    }
}

/// Records `change` on the order's timeline and moves its status toward `change.next` (see
/// [`Status::advance`]); a terminal status or on hold also records the reason. Locks the order's row,
/// so the timeline's sequence and the status change are serialized per order across replicas. An
/// order that has ended takes no more entries; one on hold still takes them (what happened after its
/// workflow ended is what its operator needs to know), but keeps its status. `None` if the order does
/// not exist.
pub async fn advance(
    conn: &mut PgConnection,
    order_id: Uuid,
    change: Change<'_>,
) -> Result<Option<Advanced>, StoreError> {
    let mut advanced = advance_round(conn, &[(order_id, change)]).await?;
    Ok(advanced.pop().flatten())
}

/// [`advance`] for many changes, in order: the same effect as calling it for each in turn, in one
/// statement for each change an order has (most batches: one). For a consumer applying a batch of
/// events, whose round trips to PostgreSQL are waited for one after another. What each change did,
/// in the slice's order.
pub async fn advance_all(
    conn: &mut PgConnection,
    changes: &[(Uuid, Change<'_>)],
) -> Result<Vec<Option<Advanced>>, StoreError> {
    // Rounds: the first change of each order, then the second of each that has one, and so on,
    // so a statement moves each order once and sees the rounds before it. Within a round the rows
    // are locked in order id order, so two batches sharing orders wait for each other instead of
    // deadlocking.
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<Uuid, usize> = HashMap::new();
    for (i, (order_id, _)) in changes.iter().enumerate() {
        let k = seen.entry(*order_id).or_insert(0);
        if rounds.len() == *k {
            rounds.push(Vec::new());
        }
        rounds[*k].push(i);
        *k += 1;
    }
    let mut advanced = vec![None; changes.len()];
    for mut round in rounds {
        round.sort_by_key(|&i| changes[i].0);
        let batch: Vec<(Uuid, Change<'_>)> = round.iter().map(|&i| changes[i]).collect();
        for (i, done) in round.into_iter().zip(advance_round(conn, &batch).await?) {
            advanced[i] = done;
        }
    }
    Ok(advanced)
}

/// The statement of [`advance`] and of each round of [`advance_all`], with `$input` the changes as
/// rows `(order_id, once_event, event, progress, r)`, `r` counting from 1.
///
/// One round trip: the row locks with what decides (the status, and for a `once` change whether the
/// timeline holds its event already), the statuses and the timeline entries. The status machine
/// stays in Rust (`Status::advance`): the statement gets, for each change, its answer for every
/// status the order could be in (`$6` and `$7`, one stretch of `$9 = Status::ALL.len()` per change),
/// and picks the one for the status it finds under the lock. An entry's number is the row's
/// `timeline_seq`, moved by the update: a `max(seq)` would be read in the statement's snapshot,
/// taken before the lock was granted, and miss an entry committed while it waited. The lock is taken
/// in a lateral subquery: a primary-key lookup for each change, whatever the plan.
macro_rules! advance_sql {
    ($input:literal) => {
        concat!(
            "with input as (",
            $input,
            "), cur as ( \
                 select i.r, i.event, i.progress, o.order_id, o.status, o.run_id, \
                     ((i.r - 1) * $9 + array_position($5::text[], o.status))::int as at, \
                     array_position($5::text[], o.status) as pos, \
                     i.once_event is not null and exists (select 1 from orders.timeline t \
                         where t.order_id = o.order_id and t.event = i.once_event) as seen \
                 from input i cross join lateral ( \
                     select o.order_id, o.status, o.run_id from orders.orders o \
                     where o.order_id = i.order_id for update \
                 ) o \
             ), changed as ( \
                 update orders.orders o set status = ($6::text[])[c.at], \
                     reason = coalesce(($7::text[])[c.at], o.reason), updated_at = now(), \
                     timeline_seq = o.timeline_seq + 1 \
                 from cur c \
                 where o.order_id = c.order_id and c.pos is not null and not c.seen \
                     and not ($8::bool[])[c.pos] \
                 returning o.order_id, o.status, o.timeline_seq \
             ), entry as ( \
                 insert into orders.timeline (order_id, seq, status, event, progress_percent) \
                 select ch.order_id, ch.timeline_seq, ch.status, c.event, c.progress \
                 from changed ch join cur c on c.order_id = ch.order_id \
             ) \
             select r, status, seen, run_id from cur"
        )
    };
}

/// One statement of [`advance_all`] (or [`advance`]'s): `changes` of distinct orders.
async fn advance_round(
    conn: &mut PgConnection,
    changes: &[(Uuid, Change<'_>)],
) -> Result<Vec<Option<Advanced>>, StoreError> {
    let statuses = Status::ALL.len();
    let from: Vec<&str> = Status::ALL.iter().map(|s| s.as_str()).collect();
    let ended: Vec<bool> = Status::ALL.iter().map(|s| s.is_terminal()).collect();
    let mut to: Vec<&str> = Vec::with_capacity(changes.len() * statuses);
    let mut why: Vec<Option<&str>> = Vec::with_capacity(changes.len() * statuses);
    for (_, change) in changes {
        for s in Status::ALL {
            let next = s.advance(change.next);
            to.push(next.as_str());
            why.push(change.reason.filter(|_| next.is_final() && !s.is_final()));
        }
    }
    fn once<'a>(c: &Change<'a>) -> Option<&'a str> {
        c.once.then_some(c.event)
    }
    let progress = |c: &Change<'_>| c.progress_percent.map(i16::from);
    // One change keeps its own statement, whose single row the planner knows of: a prepared
    // statement's generic plan for an array of rows may join the orders by a scan of the whole
    // table, fine on the empty table it was planned on and slower with every order after. A batch's
    // statement is therefore planned for the rows it gets, each time (not kept prepared): one plan
    // a batch, not one a change.
    let query = match changes {
        [(order_id, change)] => sqlx::query_as(advance_sql!(
            "select $1::uuid as order_id, $2::text as once_event, $3::text as event, \
                 $4::int2 as progress, 1::int8 as r"
        ))
        .bind(*order_id)
        .bind(once(change))
        .bind(change.event)
        .bind(progress(change)),
        _ => sqlx::query_as(advance_sql!(
            "select * from unnest($1::uuid[], $2::text[], $3::text[], $4::int2[]) \
                 with ordinality as i(order_id, once_event, event, progress, r)"
        ))
        .bind(changes.iter().map(|(id, _)| *id).collect::<Vec<Uuid>>())
        .bind(changes.iter().map(|(_, c)| once(c)).collect::<Vec<_>>())
        .bind(changes.iter().map(|(_, c)| c.event).collect::<Vec<_>>())
        .bind(changes.iter().map(|(_, c)| progress(c)).collect::<Vec<_>>())
        .persistent(false),
    };
    let rows: Vec<(i64, String, bool, Option<Uuid>)> = query
        .bind(&from)
        .bind(&to)
        .bind(&why)
        .bind(&ended)
        .bind(statuses as i32)
        .fetch_all(&mut *conn)
        .await?;
    let mut advanced = vec![None; changes.len()];
    for (r, current, seen, run_id) in rows {
        let i = (r - 1) as usize;
        let order_id = changes[i].0;
        let before = Status::parse(&current).ok_or(StoreError::UnknownStatus(order_id, current))?;
        let after = if before.is_terminal() || seen {
            before
        } else {
            before.advance(changes[i].1.next)
        };
        advanced[i] = Some(Advanced {
            before,
            after,
            run_id,
        });
    }
    Ok(advanced)
}

/// Whether the payment ledger holds `operation` for the order.
pub async fn has_payment(
    db: impl PgExecutor<'_>,
    order_id: Uuid,
    operation: &str,
) -> Result<bool, StoreError> {
    Ok(sqlx::query_scalar(
        "select exists (select 1 from orders.payments where order_id = $1 and operation = $2)",
    )
    .bind(order_id)
    .bind(operation)
    .fetch_one(db)
    .await?)
}

/// Whether the order service's outbox holds an event with this id.
pub async fn outbox_has(db: impl PgExecutor<'_>, event_id: Uuid) -> Result<bool, StoreError> {
    Ok(
        sqlx::query_scalar("select exists (select 1 from orders.outbox where event_id = $1)")
            .bind(event_id)
            .fetch_one(db)
            .await?,
    )
}

/// Records one operation of the simulated payment provider, once per idempotency key. Returns
/// whether it was new.
pub async fn record_payment(
    db: impl PgExecutor<'_>,
    idempotency_key: &str,
    order_id: Uuid,
    operation: &str,
    amount_cents: u64,
) -> Result<bool, StoreError> {
    let rows = sqlx::query(
        "insert into orders.payments (idempotency_key, order_id, operation, amount_cents) \
         values ($1, $2, $3, $4) on conflict (idempotency_key) do nothing",
    )
    .bind(idempotency_key)
    .bind(order_id)
    .bind(operation)
    .bind(amount_cents as i64)
    .execute(db)
    .await?
    .rows_affected();
    Ok(rows == 1)
}

/// The order schema's migrations and messaging tables, and the engine's schema, as the service
/// applies them at start: for the unit tests
/// of the store and the API, which run without a host.
#[cfg(test)]
pub(crate) async fn migrate(pool: &sqlx::PgPool) -> Result<(), pizza_servicekit::store::MigrateError> {
    use pizza_servicekit::Service as _;
    let (migrator, schema) = (crate::OrderService::migrations(), crate::OrderService::SCHEMA);
    pizza_servicekit::store::migrate(pool, migrator, schema).await?;
    pizza_workflow::migrate(pool)
        .await
        .expect("the workflow engine's schema migrates");
    Ok(())
}

/// The order schema as the messaging crate names it (see [`migrate`]).
#[cfg(test)]
pub(crate) fn messaging_schema() -> pizza_messaging::Schema {
    use pizza_servicekit::Service as _;
    pizza_messaging::Schema::new(crate::OrderService::SCHEMA).expect("a valid schema name")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_round_trip_and_only_three_are_terminal() {
        for s in Status::ALL {
            assert_eq!(Status::parse(s.as_str()), Some(s));
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        let terminal: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_terminal()).collect();
        assert_eq!(terminal, [Status::Completed, Status::Cancelled, Status::Rejected]);
        let final_: Vec<_> = Status::ALL.into_iter().filter(|s| s.is_final()).collect();
        assert_eq!(
            final_,
            [
                Status::Completed,
                Status::Cancelled,
                Status::Rejected,
                Status::OnHold
            ]
        );
    }

    #[test]
    fn status_moves_forward_only_and_never_leaves_a_terminal_one() {
        assert_eq!(Status::Ready.advance(Status::InPreparation), Status::Ready);
        assert_eq!(Status::Paid.advance(Status::OnItsWay), Status::OnItsWay);
        assert_eq!(Status::OnItsWay.advance(Status::OnItsWay), Status::OnItsWay);
        assert_eq!(Status::Ready.advance(Status::Cancelled), Status::Cancelled);
        assert_eq!(Status::Cancelled.advance(Status::Completed), Status::Cancelled);
        assert_eq!(Status::Completed.advance(Status::Cancelled), Status::Completed);
        assert_eq!(Status::OnHold.advance(Status::Delivered), Status::OnHold);
        assert_eq!(Status::OnHold.advance(Status::Cancelled), Status::OnHold);
        assert!(
            Status::OnHold.reached(Status::OutForDelivery),
            "no customer cancel once on hold"
        );
        assert!(Status::OnItsWay.reached(Status::OutForDelivery));
        assert!(Status::OutForDelivery.reached(Status::OutForDelivery));
        assert!(!Status::Ready.reached(Status::OutForDelivery));
    }

    #[test]
    fn customer_data_never_shows_in_debug_output() {
        let c = Customer {
            name: "Ada Lovelace".into(),
            phone: "+39 055 1234".into(),
            address: Address {
                street: "1 Oven Lane".into(),
                postal_code: "50100".into(),
                city: "Firenze".into(),
            },
        };
        let text = format!("{c:?} {:?}", c.address);
        for secret in ["Ada", "055", "Oven", "50100", "Firenze"] {
            assert!(!text.contains(secret), "{text}");
        }
    }
}
