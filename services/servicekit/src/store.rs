//! What every service does with its database before and around its own queries.
//!
//! Each service owns one schema: its tables, its outbox and inbox, and its migration history all
//! live there. The history table is the service's own (`<schema>._<schema>_migrations`) because
//! sqlx keeps one `_sqlx_migrations` table per database by default, and two services (or a
//! service and the messaging tables) sharing it would each see the other's versions as unknown
//! migrations and refuse to start.

use sqlx::migrate::Migrator;
use sqlx::{PgPool, Postgres, Transaction};

use crate::faults::Faults;

/// Why the migrations failed.
#[derive(Debug, thiserror::Error)]
pub enum MigrateError {
    /// The schema name is not a valid identifier.
    #[error(transparent)]
    Schema(#[from] pizza_messaging::SchemaError),
    /// A migration of the service failed, or an applied one was edited.
    #[error("running the {schema} migrations: {source}")]
    Service {
        /// The service's schema.
        schema: String,
        /// What sqlx reported.
        source: sqlx::migrate::MigrateError,
    },
    /// The messaging tables could not be created.
    #[error(transparent)]
    Messaging(#[from] pizza_messaging::MigrateError),
}

/// The migration history table of `schema`.
pub fn history_table(schema: &str) -> String {
    format!("{schema}._{schema}_migrations")
}

/// Creates `schema` and applies the service's `migrator` there with its own history table, then
/// the outbox and inbox of `pizza-messaging` in the same schema (with their own history). Running
/// it again changes nothing.
pub async fn migrate(pool: &PgPool, mut migrator: Migrator, schema: &str) -> Result<(), MigrateError> {
    let messaging = pizza_messaging::Schema::new(schema)?;
    migrator.create_schema(schema.to_owned());
    migrator.dangerous_set_table_name(history_table(schema));
    migrator.run(pool).await.map_err(|source| MigrateError::Service {
        schema: schema.to_owned(),
        source,
    })?;
    pizza_messaging::migrate(pool, &messaging).await?;
    Ok(())
}

/// Waits for the database latency of the fault plan, if it sets one: call it before a statement
/// that runs outside [`begin`], so "the database is slow" shows up in every write path the same way.
pub async fn pause_for_db_latency(faults: &Faults) {
    let latency = faults.db_latency();
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

/// Begins a transaction after the database latency of the fault plan
/// ([`pause_for_db_latency`]).
pub async fn begin(pool: &PgPool, faults: &Faults) -> Result<Transaction<'static, Postgres>, sqlx::Error> {
    pause_for_db_latency(faults).await;
    pool.begin().await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_schema_keeps_its_history_in_a_table_of_its_own() {
        assert_eq!(history_table("kitchen"), "kitchen._kitchen_migrations");
        assert_eq!(history_table("delivery"), "delivery._delivery_migrations");
    }
}
