//! The inbox: which events a consumer group has already applied.
//!
//! Kafka delivers at least once: after a crash, a rebalance or an offset that was not committed yet,
//! a record comes again. The consumer claims the event's id here in the same transaction as the
//! handler's effect, so either both commit or neither does, and a second delivery finds the id and
//! skips the effect. Two consumers handling the same event at once (during a rebalance) serialize on
//! the primary key: the second waits for the first's commit, then sees a duplicate.

use std::collections::HashSet;
use std::sync::Arc;

use sqlx::{AssertSqlSafe, Postgres, Transaction};
use uuid::Uuid;

use crate::schema::Schema;

/// `<schema>.inbox`.
#[derive(Debug, Clone)]
pub struct Inbox {
    schema: Schema,
    claim_sql: Arc<str>,
    claim_all_sql: Arc<str>,
    prune_sql: Arc<str>,
}

/// Where a claimed event came from, recorded for operators.
#[derive(Debug, Clone, Copy)]
pub struct Origin<'a> {
    /// The consumer group.
    pub consumer_group: &'a str,
    /// The CloudEvents type.
    pub event_type: &'a str,
    /// The topic.
    pub topic: &'a str,
    /// The partition.
    pub partition: i32,
    /// The offset.
    pub offset: i64,
}

impl Inbox {
    /// The inbox of `schema` (created by [`crate::migrate`]).
    pub fn new(schema: Schema) -> Self {
        let t = schema.table("inbox");
        Self {
            claim_sql: format!(
                "insert into {t} (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset) \
                 values ($1, $2, $3, $4, $5, $6) on conflict (consumer_group, event_id) do nothing"
            )
            .into(),
            claim_all_sql: format!(
                "insert into {t} (consumer_group, event_id, event_type, topic, kafka_partition, kafka_offset) \
                 select * from unnest($1::text[], $2::uuid[], $3::text[], $4::text[], $5::int[], $6::bigint[]) \
                 on conflict (consumer_group, event_id) do nothing returning event_id"
            )
            .into(),
            prune_sql: format!("delete from {t} where processed_at < now() - make_interval(secs => $1)").into(),
            schema,
        }
    }

    /// The schema the rows live in.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    /// Records `event_id` as applied by `origin.consumer_group`, in `tx`. Returns `false` if it was
    /// already: the caller must then skip the effect.
    pub async fn claim(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        event_id: Uuid,
        origin: Origin<'_>,
    ) -> Result<bool, sqlx::Error> {
        let done = sqlx::query(AssertSqlSafe(self.claim_sql.clone()))
            .bind(origin.consumer_group)
            .bind(event_id)
            .bind(origin.event_type)
            .bind(origin.topic)
            .bind(origin.partition)
            .bind(origin.offset)
            .execute(&mut **tx)
            .await?;
        Ok(done.rows_affected() == 1)
    }

    /// [`Inbox::claim`] for several events in one statement. Returns the ids claimed now; an id
    /// missing from it was applied before (or comes twice in `claims`: its first copy claims it).
    pub async fn claim_all(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        claims: &[(Uuid, Origin<'_>)],
    ) -> Result<HashSet<Uuid>, sqlx::Error> {
        let claimed: Vec<Uuid> = sqlx::query_scalar(AssertSqlSafe(self.claim_all_sql.clone()))
            .bind(claims.iter().map(|(_, o)| o.consumer_group).collect::<Vec<_>>())
            .bind(claims.iter().map(|(id, _)| *id).collect::<Vec<_>>())
            .bind(claims.iter().map(|(_, o)| o.event_type).collect::<Vec<_>>())
            .bind(claims.iter().map(|(_, o)| o.topic).collect::<Vec<_>>())
            .bind(claims.iter().map(|(_, o)| o.partition).collect::<Vec<_>>())
            .bind(claims.iter().map(|(_, o)| o.offset).collect::<Vec<_>>())
            .fetch_all(&mut **tx)
            .await?;
        Ok(claimed.into_iter().collect())
    }

    /// Deletes claims older than `older_than`. Safe once that is longer than the topics' retention:
    /// no record older than that can be delivered again.
    pub async fn prune<'e, E>(&self, executor: E, older_than: std::time::Duration) -> Result<u64, sqlx::Error>
    where
        E: sqlx::PgExecutor<'e>,
    {
        let done = sqlx::query(AssertSqlSafe(self.prune_sql.clone()))
            .bind(older_than.as_secs_f64())
            .execute(executor)
            .await?;
        Ok(done.rows_affected())
    }
}
