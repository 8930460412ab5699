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

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use pizza_contracts::EventData;
use pizza_telemetry::propagation;
use sqlx::types::Json;
use sqlx::{AssertSqlSafe, Postgres, Transaction};
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
    pub(crate) lock_pending: String,
    pub(crate) blockers: String,
    pub(crate) mark_published: String,
    pub(crate) mark_failed: String,
    pub(crate) backlog: String,
    pub(crate) purge: String,
}

impl Sql {
    fn new(schema: &Schema) -> Self {
        let t = schema.table("outbox");
        Self {
            insert: format!(
                "insert into {t} (event_id, event_source, event_type, event_time, topic, message_key, payload, \
                 trace_carrier) values ($1, $2, $3, $4, $5, $6, $7, $8) returning id"
            ),
            // skip locked: several relays share the table, each taking rows the others have not.
            lock_pending: format!(
                "select id, event_id, event_source, event_type, event_time, topic, message_key, payload, \
                 trace_carrier from {t} where published_at is null order by id limit $1 for update skip locked"
            ),
            // The earliest pending row of each key outside this relay's batch (locked by another relay,
            // or committed after the batch was taken): rows after it must wait for it.
            blockers: format!(
                "select topic, message_key, min(id) from {t} where published_at is null \
                 and message_key = any($1) and not (id = any($2)) group by topic, message_key"
            ),
            mark_published: format!(
                "update {t} set published_at = now(), attempts = attempts + 1, last_error = null \
                 where id = any($1)"
            ),
            mark_failed: format!(
                "update {t} as o set attempts = o.attempts + 1, last_error = f.error \
                 from unnest($1::bigint[], $2::text[]) as f(id, error) where o.id = f.id"
            ),
            backlog: format!("select topic, count(*) from {t} where published_at is null group by topic"),
            purge: format!(
                "delete from {t} where published_at is not null and published_at < now() - make_interval(secs => $1)"
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
        let carrier: BTreeMap<String, String> =
            propagation::context_to_carrier(&tracing::Span::current().context())
                .into_iter()
                .collect();
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

    /// Rows not yet published, per topic.
    pub async fn backlog<'e, E>(&self, executor: E) -> Result<Vec<(String, i64)>, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        sqlx::query_as(AssertSqlSafe(self.sql.backlog.clone()))
            .fetch_all(executor)
            .await
    }
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

/// Which rows of a locked batch may be published now, in id order.
///
/// `batch` is `(id, topic, key)` in id order; `blockers` maps `(topic, key)` to the smallest id of a
/// pending row of that key that is *not* in the batch. A row may go only if no such row precedes it:
/// otherwise a later event of an order would overtake an earlier one that another relay holds, or
/// that committed after this batch was read.
pub(crate) fn publishable(
    batch: &[(i64, &str, &str)],
    blockers: &HashMap<(String, String), i64>,
) -> Vec<i64> {
    batch
        .iter()
        .filter(|(id, topic, key)| {
            blockers
                .get(&((*topic).to_owned(), (*key).to_owned()))
                .is_none_or(|blocker| blocker > id)
        })
        .map(|(id, _, _)| *id)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blockers(entries: &[(&str, &str, i64)]) -> HashMap<(String, String), i64> {
        entries
            .iter()
            .map(|(t, k, id)| (((*t).to_owned(), (*k).to_owned()), *id))
            .collect()
    }

    #[test]
    fn with_nothing_pending_elsewhere_the_whole_batch_goes_in_id_order() {
        let batch = [(1, "t", "a"), (2, "t", "b"), (3, "t", "a")];
        assert_eq!(publishable(&batch, &HashMap::new()), vec![1, 2, 3]);
    }

    #[test]
    fn a_key_waits_for_its_earlier_row_held_by_another_relay() {
        // Another relay holds row 5 of key a; this one has 7 and 9 of a, and 8 of b.
        let batch = [(7, "t", "a"), (8, "t", "b"), (9, "t", "a")];
        assert_eq!(publishable(&batch, &blockers(&[("t", "a", 5)])), vec![8]);
    }

    #[test]
    fn rows_before_a_late_committed_row_of_their_key_still_go() {
        // Row 12 of key a committed after the batch was read: 10 may go, 14 must wait behind 12.
        let batch = [(10, "t", "a"), (14, "t", "a")];
        assert_eq!(publishable(&batch, &blockers(&[("t", "a", 12)])), vec![10]);
    }

    #[test]
    fn the_same_key_on_another_topic_is_another_sequence() {
        let batch = [(3, "orders", "a"), (4, "kitchen", "a")];
        assert_eq!(publishable(&batch, &blockers(&[("kitchen", "a", 1)])), vec![3]);
    }

    #[test]
    fn statements_name_the_schema_quoted() {
        let sql = Sql::new(&Schema::new("order").unwrap());
        assert!(sql.insert.starts_with("insert into \"order\".outbox"));
        assert!(sql.lock_pending.contains("for update skip locked"));
        assert!(sql.lock_pending.contains("order by id"));
    }
}
