//! The transactional outbox: events written in the caller's transaction, published later by the
//! [`Relay`](crate::Relay).
//!
//! Publishing to Kafka inside a database transaction is a dual write: the commit can fail after the
//! publish (a phantom event), or the publish after the commit (a lost one). The outbox makes the
//! event part of the state change instead: both commit or neither does, and the relay turns committed
//! rows into Kafka records at least once.
//!
//! Each row also keeps the W3C context of the span that wrote it (`traceparent`/`tracestate` only,
//! never baggage), so the relay's `send` span continues the trace of the request that caused the
//! event, however late it runs.
//!
//! # Order
//! Rows are published in id order per record key (per order). Ids come from a sequence, so for one
//! order they follow commit order as long as the transactions that enqueue that order's events are
//! serialized, which they are whenever each one updates the order's row first, as every state change
//! does. Events of different orders have no order to keep.

use std::collections::BTreeMap;
use std::sync::Arc;

use pizza_contracts::EventData;
use pizza_telemetry::propagation;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, PgPool, Postgres, Transaction};
use time::OffsetDateTime;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;
use uuid::Uuid;

use crate::cloudevents::{Attributes, EncodeError, Envelope};
use crate::schema::Schema;

/// Writes events into `<schema>.outbox`.
#[derive(Debug, Clone)]
pub struct Outbox {
    schema: Schema,
    sql: Arc<Sql>,
}

/// The statements, built once per schema (the schema is spliced in; values are always bound).
#[derive(Debug)]
pub(crate) struct Sql {
    pub(crate) insert: String,
    pub(crate) insert_all: String,
    pub(crate) claim: String,
    pub(crate) renew: String,
    pub(crate) settle: String,
    pub(crate) release: String,
    pub(crate) backlog: String,
    pub(crate) purge: String,
    pub(crate) dead: String,
    pub(crate) requeue: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let t = schema.table("outbox");
        // A row holds back the later rows of its topic and key while it is claimed by a relay, backing
        // off after a refusal, or dead. `$me` is the claiming relay: its own claims hold their keys
        // even past their end, so a relay never claims again a row it still has in flight.
        let held = |alias: &str, me: &str| {
            format!(
                "{alias}.published_at is null and ({alias}.dead_at is not null or {alias}.available_at > now() \
                 or {alias}.claimed_by = {me})"
            )
        };
        let columns = "o.id, o.event_id, o.event_source, o.event_type, o.event_time, o.topic, o.message_key, \
                       o.payload, o.trace_carrier, o.refusals";
        Self {
            insert: format!(
                "insert into {t} (event_id, event_source, event_type, event_time, topic, message_key, payload, \
                 trace_carrier) values ($1, $2, $3, $4, $5, $6, $7, $8) returning id"
            ),
            // The rows in the order given (`with ordinality`, sorted): the sequence numbers them as
            // they are inserted, so ids ascend in that order.
            insert_all: format!(
                "insert into {t} (event_id, event_source, event_type, event_time, topic, message_key, payload, \
                 trace_carrier) \
                 select e.event_id, e.event_source, e.event_type, e.event_time, $5, e.message_key, e.payload, \
                     e.trace_carrier \
                 from unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $6::text[], $7::bytea[], \
                     $8::jsonb[]) with ordinality \
                     as e(event_id, event_source, event_type, event_time, message_key, payload, trace_carrier, n) \
                 order by e.n"
            ),
            // One statement, so one short transaction: pick available rows in id order, skipping rows
            // other relays are locking right now and rows behind a held row of their key; keep those
            // no earlier pending row of their key is missing from the batch (a row another relay is
            // claiming at this moment); claim them until `now() + $3` seconds.
            //
            // Written so that no plan can read the whole table per row, whatever the statistics say
            // (see "Plans that hold" in the relay's module docs): each `not exists` is a subplan
            // (`offset 0` keeps PostgreSQL from turning it into a join), which looks up the row's key
            // in `outbox_pending_by_key`; the update finds the claimed rows by primary key from an
            // array rather than joining the table.
            claim: format!(
                "with batch as ( \
                   select o.id, o.topic, o.message_key from {t} o \
                   where o.published_at is null and o.dead_at is null \
                     and (o.available_at is null or o.available_at <= now()) \
                     and o.claimed_by is distinct from $2 \
                     and not exists (select 1 from {t} h where h.message_key = o.message_key \
                                     and h.topic = o.topic and h.id < o.id and {held_h} offset 0) \
                   order by o.id limit $1 for update of o skip locked), \
                 go as ( \
                   select b.id from batch b where not exists ( \
                     select 1 from {t} e where e.published_at is null and e.message_key = b.message_key \
                       and e.topic = b.topic and e.id < b.id \
                       and not exists (select 1 from batch x where x.id = e.id) offset 0)) \
                 update {t} o set claimed_by = $2, available_at = now() + make_interval(secs => $3) \
                 where o.id = any(array(select id from go)) returning {columns}",
                held_h = held("h", "$2"),
            ),
            renew: format!(
                "update {t} set available_at = now() + make_interval(secs => $3) \
                 where id = any($1) and claimed_by = $2 and published_at is null"
            ),
            // How each claimed row ended (see `relay::Settle`). A published row is marked whoever
            // holds it now (it is in the topic either way); the others only while this relay still
            // holds the claim.
            settle: format!(
                "update {t} as o set \
                   published_at = case when s.outcome = 'published' then now() else o.published_at end, \
                   attempts = o.attempts + case when s.outcome = 'unsent' then 0 else 1 end, \
                   last_error = case when s.outcome = 'published' then null \
                                     when s.outcome = 'unsent' then o.last_error else s.error end, \
                   refusals = o.refusals + case when s.outcome in ('refused', 'dead') then 1 else 0 end, \
                   dead_at = case when s.outcome = 'dead' then now() else o.dead_at end, \
                   available_at = case when s.outcome = 'refused' then now() + make_interval(secs => s.retry_after) \
                                       else null end, \
                   claimed_by = null \
                 from unnest($1::bigint[], $2::text[], $3::text[], $4::float8[]) as s(id, outcome, error, retry_after) \
                 where o.id = any($1::bigint[]) and o.id = s.id and (s.outcome = 'published' or o.claimed_by = $5)"
            ),
            release: format!(
                "update {t} set claimed_by = null, available_at = null \
                 where claimed_by = $1 and published_at is null"
            ),
            backlog: format!(
                "select topic, count(*) filter (where dead_at is null), count(*) filter (where dead_at is not null) \
                 from {t} where published_at is null group by topic"
            ),
            purge: format!(
                "delete from {t} where published_at is not null and published_at < now() - make_interval(secs => $1)"
            ),
            dead: format!(
                "select id, event_id, event_type, topic, message_key, attempts, refusals, last_error, created_at, dead_at \
                 from {t} where dead_at is not null and published_at is null order by id"
            ),
            requeue: format!(
                "update {t} set dead_at = null, refusals = 0, available_at = null, claimed_by = null \
                 where id = any($1) and dead_at is not null and published_at is null"
            ),
        }
    }
}

/// Why an event could not be written to the outbox.
#[derive(Debug, thiserror::Error)]
pub enum OutboxError {
    /// The event could not be encoded (its data did not serialize).
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// The insert failed; the caller's transaction should be rolled back.
    #[error("writing the outbox row: {0}")]
    Database(#[from] sqlx::Error),
}

impl Outbox {
    /// The outbox of `schema` (created by [`crate::migrate`]).
    pub fn new(schema: Schema) -> Self {
        let sql = Arc::new(Sql::new(&schema));
        Self { schema, sql }
    }

    /// The schema the rows live in.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Wakes this process's relay of this outbox: call it after committing rows to it, for a relay
    /// woken by its process ([`crate::Source::Process`]); see the relay's module docs.
    pub fn announce(&self, pool: &PgPool) {
        crate::relay::announce_outbox(pool, &self.schema);
    }

    pub(crate) fn sql(&self) -> &Sql {
        &self.sql
    }

    /// Writes `event` for its contract topic (`EventData::topic`) in the caller's transaction, with
    /// the current span's trace context. Returns the row id. Nothing is published unless the
    /// transaction commits.
    pub async fn enqueue<T: EventData>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event: &Envelope<T>,
    ) -> Result<i64, OutboxError> {
        self.enqueue_to(tx, event.data.topic(), event).await
    }

    /// Like [`Outbox::enqueue`], for an explicit topic.
    pub async fn enqueue_to<T: EventData>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        topic: &str,
        event: &Envelope<T>,
    ) -> Result<i64, OutboxError> {
        let encoded = event.encode()?;
        let carrier = current_carrier();
        let a = &event.attributes;
        let id: i64 = sqlx::query_scalar(AssertSqlSafe(self.sql.insert.clone()))
            .bind(a.id)
            .bind(&a.source)
            .bind(&a.event_type)
            .bind(a.time)
            .bind(topic)
            .bind(&encoded.key)
            .bind(&encoded.payload)
            .bind(Json(carrier))
            .fetch_one(&mut **tx)
            .await?;
        Ok(id)
    }

    /// Writes `events` for `topic` in the caller's transaction, in one statement: for a loop that
    /// reports a batch of steps at once (the delivery's drivers, the kitchen's ovens). Each event carries the trace
    /// context given beside it, the context of the span of the step it reports (captured with
    /// [`current_carrier`] inside that span), since the rows are written after those spans.
    /// Their ids ascend in the order given. Nothing is published unless the transaction commits.
    pub async fn enqueue_all_to<T: EventData>(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        topic: &str,
        events: &[(Envelope<T>, BTreeMap<String, String>)],
    ) -> Result<(), OutboxError> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len();
        let (mut ids, mut sources, mut types, mut times) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut keys, mut payloads, mut carriers) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for (event, carrier) in events {
            let encoded = event.encode()?;
            let a = &event.attributes;
            ids.push(a.id);
            sources.push(a.source.clone());
            types.push(a.event_type.clone());
            times.push(a.time);
            keys.push(encoded.key);
            payloads.push(encoded.payload);
            carriers.push(Json(carrier));
        }
        sqlx::query(AssertSqlSafe(self.sql.insert_all.clone()))
            .bind(ids)
            .bind(sources)
            .bind(types)
            .bind(times)
            .bind(topic)
            .bind(keys)
            .bind(payloads)
            .bind(carriers)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Rows not yet published, per topic: those still to go and those the relay gave up on.
    pub async fn backlog<'e, E>(&self, executor: E) -> Result<Vec<Backlog>, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let rows: Vec<(String, i64, i64)> = sqlx::query_as(AssertSqlSafe(self.sql.backlog.clone()))
            .fetch_all(executor)
            .await?;
        Ok(rows
            .into_iter()
            .map(|(topic, pending, dead)| Backlog { topic, pending, dead })
            .collect())
    }

    /// The rows the relay gave up on (see [`crate::relay`]), oldest first, with the last error.
    pub async fn dead<'e, E>(&self, executor: E) -> Result<Vec<DeadRow>, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        sqlx::query_as(AssertSqlSafe(self.sql.dead.clone()))
            .fetch_all(executor)
            .await
    }

    /// Puts dead rows back in line: the relay tries them again at once, with a fresh count of
    /// refusals, and the rows of their keys that waited behind them follow in order. Rows that are
    /// not dead are left alone. Returns how many rows were requeued.
    ///
    /// For an operator, after fixing the cause (creating the topic, raising the size limit). The
    /// same in SQL: `update <schema>.outbox set dead_at = null, refusals = 0, available_at = null
    /// where id in (...) and dead_at is not null`. Deleting a dead row instead gives up on the event
    /// for good and lets its key move on.
    pub async fn requeue<'e, E>(&self, executor: E, ids: &[i64]) -> Result<u64, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let done = sqlx::query(AssertSqlSafe(self.sql.requeue.clone()))
            .bind(ids)
            .execute(executor)
            .await?;
        Ok(done.rows_affected())
    }
}

/// The current span's W3C context (`traceparent`, `tracestate`), as an outbox row keeps it: what
/// [`Outbox::enqueue_to`] stores with its row, and what [`Outbox::enqueue_all_to`] takes beside
/// each event. Empty where the current span has no valid context (no span, or the SDK disabled).
pub fn current_carrier() -> BTreeMap<String, String> {
    propagation::context_to_carrier(&tracing::Span::current().context())
        .into_iter()
        .collect()
}

/// Unpublished rows of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backlog {
    /// The topic.
    pub topic: String,
    /// Rows still to be published (claimed, backing off or waiting their turn).
    pub pending: i64,
    /// Rows the relay gave up on, waiting for an operator.
    pub dead: i64,
}

/// A row the relay gave up on, as [`Outbox::dead`] lists it. No payload: it may hold customer data.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct DeadRow {
    /// The row id (what [`Outbox::requeue`] takes).
    pub id: i64,
    /// The event's `ce_id`.
    pub event_id: Uuid,
    /// The event's `ce_type`.
    pub event_type: String,
    /// Where it was going.
    pub topic: String,
    /// Its record key (the order id).
    pub message_key: String,
    /// Publish attempts that got an answer.
    pub attempts: i32,
    /// Of those, the ones refused for the row itself.
    pub refusals: i32,
    /// The last refusal.
    pub last_error: Option<String>,
    /// When the event was written.
    pub created_at: OffsetDateTime,
    /// When the relay gave up.
    pub dead_at: OffsetDateTime,
}

/// A pending row as the relay reads it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(crate) struct PendingRow {
    pub(crate) id: i64,
    pub(crate) event_id: Uuid,
    pub(crate) event_source: String,
    pub(crate) event_type: String,
    pub(crate) event_time: OffsetDateTime,
    pub(crate) topic: String,
    pub(crate) message_key: String,
    pub(crate) payload: Vec<u8>,
    pub(crate) trace_carrier: Json<BTreeMap<String, String>>,
    /// Refusals so far (see [`crate::relay`]).
    pub(crate) refusals: i32,
}

impl PendingRow {
    /// The CloudEvents attributes, rebuilt from the columns. `None` if the key is not an order id,
    /// which `enqueue` never writes.
    pub(crate) fn attributes(&self) -> Option<Attributes> {
        Some(Attributes {
            id: self.event_id,
            source: self.event_source.clone(),
            event_type: self.event_type.clone(),
            order_id: Uuid::parse_str(&self.message_key).ok()?,
            time: self.event_time,
        })
    }

    /// The stored trace context as carrier pairs.
    pub(crate) fn carrier(&self) -> Vec<(String, String)> {
        self.trace_carrier
            .0
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statements_name_the_schema_quoted() {
        let sql = Sql::new(&Schema::new("order").unwrap());
        assert!(sql.insert.starts_with("insert into \"order\".outbox"));
        assert!(sql.claim.contains("for update of o skip locked"));
        assert!(sql.claim.contains("order by o.id"));
    }
}
